"""A sharded checkpoint from an untrusted source runs no code: DCP's ``.metadata`` is read
through an allowlist, for resume and ``python -m launch.consolidate`` alike."""

from __future__ import annotations

import copy
import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from distengine.checkpoint import (
    CheckpointLoadError,
    ForgedMetadataError,
    ShardedCheckpoint,
    ShardedStorage,
    consolidate,
    gather_state,
    read_dcp_metadata,
)
from distengine.checkpoint.disk import file_checksum
from distengine.checkpoint.sharded import MANIFEST
from distengine.handlers import find_latest_checkpoint
from launch.consolidate import main as consolidate_main


class Payload:
    """Unpickled by plain ``pickle``, it creates ``marker`` (proof that it ran)."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "exec":
            return (exec, (f"open({self.marker!r}, 'w').close()",))
        return (Path.touch, (Path(self.marker),))  # through an allowed class's method


def objects() -> dict:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # non-tensor leaves: bytes items
    return {"model": model, "optimizer": optimizer}


def forge(folder: Path, payload: Payload) -> None:
    """What whoever can write the folder can do: a crafted .metadata, the manifest to match."""
    (folder / ".metadata").write_bytes(pickle.dumps(payload, protocol=4))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][".metadata"] = {
        "size": (folder / ".metadata").stat().st_size,
        "crc32": file_checksum(folder / ".metadata"),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_crafted_dcp_metadata_is_refused_by_every_reader_and_never_run(tmp_path, capsys):
    storage = ShardedStorage(tmp_path / "checkpoints")
    storage.save("checkpoint_1", *gather_state(objects()), {"iteration": 1, "run_id": "r"})
    folder = tmp_path / "checkpoints" / "checkpoint_1"
    assert type(read_dcp_metadata(folder)).__name__ == "Metadata"  # DCP's own: read as before
    marker = tmp_path / "the payload ran"
    for how, named in (("method", "pathlib.Path.touch"), ("exec", "builtins.exec")):
        forge(folder, Payload(marker, how))
        refused = f"{folder / '.metadata'} names {named}, which is not one of torch.distributed"
        with pytest.raises(ForgedMetadataError, match=refused):
            read_dcp_metadata(folder)
        with pytest.raises(
            RuntimeError, match=f"not loaded: rank 0: ForgedMetadataError: {refused}"
        ):
            ShardedCheckpoint(folder).load(objects())
        with pytest.raises(CheckpointLoadError, match=f"sharded checkpoint {folder} is refused: "):
            find_latest_checkpoint(tmp_path / "checkpoints")  # what a resume does first
        with pytest.raises(ValueError, match=refused):
            consolidate(folder, tmp_path / "out.pt")
    code = consolidate_main([str(folder), str(tmp_path / "out.pt")])  # the CLI, in process
    said = capsys.readouterr().err
    assert code == 2 and said.startswith(f"error: {refused}") and said.count("\n") == 1, said
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_an_index_naming_a_file_outside_its_folder_is_refused(tmp_path):
    """DCP reads the files its index names, joined to the folder: an absolute or ``..`` name
    would read any file on the machine."""
    storage = ShardedStorage(tmp_path)
    storage.save("checkpoint_1", *gather_state(objects()), {"iteration": 1})
    folder = tmp_path / "checkpoint_1"
    written = read_dcp_metadata(folder)
    for outside in ("/etc/hostname", "../checkpoint_2/__0_0.distcp"):
        metadata = copy.deepcopy(written)
        for info in metadata.storage_data.values():
            info.relative_path = outside
        (folder / ".metadata").write_bytes(pickle.dumps(metadata))
        with pytest.raises(ForgedMetadataError, match=f"names the file {outside!r}, which is not"):
            read_dcp_metadata(folder)


def test_a_crafted_non_tensor_value_in_the_shards_is_refused_and_never_run(tmp_path):
    """DCP loads a checkpoint's non-tensor values (an optimizer's lr) with
    ``torch.load(weights_only=False)``; here a forged one, appended to the shard file and
    indexed with DCP's own types, is refused by ``weights_only`` loading on resume and in
    consolidation."""
    storage = ShardedStorage(tmp_path)
    storage.save("checkpoint_1", *gather_state(objects()), {"iteration": 1})
    folder, marker = tmp_path / "checkpoint_1", tmp_path / "the payload ran"
    metadata = read_dcp_metadata(folder)
    index = next(i for i in metadata.storage_data if i.fqn.endswith("param_groups.0.lr"))
    info = metadata.storage_data[index]
    shard = folder / info.relative_path
    payload = io.BytesIO()
    torch.save(Payload(marker, "exec"), payload, pickle_protocol=2)
    info.offset, info.length = shard.stat().st_size, len(payload.getvalue())
    with open(shard, "ab") as handle:
        handle.write(payload.getvalue())
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    manifest = json.loads((folder / MANIFEST).read_text())
    for name in (".metadata", shard.name):
        manifest["files"][name] = {
            "size": (folder / name).stat().st_size,
            "crc32": file_checksum(folder / name),
        }
    (folder / MANIFEST).write_text(json.dumps(manifest))
    refused = "UnpicklingError: Unsupported global: GLOBAL exec"  # torch drops "builtins."
    with pytest.raises(RuntimeError, match=f"{folder} was not loaded: {refused}"):
        ShardedCheckpoint(folder).load(objects())
    with pytest.raises(ValueError, match=f"{folder} could not be read: {refused}"):
        consolidate(folder, tmp_path / "out.pt")
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def _setattr_pickle(module: str, name: str, attribute: str, then: object) -> bytes:
    """A pickle that sets ``module.name.attribute = "forged"`` (BUILD with slot state on the
    class itself), then holds ``then``: DCP's own Metadata, every name in it allowed."""

    def text(value: str) -> bytes:  # BINUNICODE: no memo entry, so the tail's stay right
        return b"X" + len(value).to_bytes(4, "little") + value.encode()

    head = f"c{module}\n{name}\n".encode() + b"N}" + text(attribute) + text("forged") + b"s\x86b0"
    return b"\x80\x04" + head + pickle.dumps(then, protocol=4)[2:]


@pytest.mark.parametrize(
    "module, name",
    [("pathlib", "PosixPath"), ("torch.distributed.checkpoint.metadata", "Metadata")],
)
def test_a_crafted_dcp_metadata_cannot_change_an_allowed_class(tmp_path, module, name):
    """Only allowed names resolve, but pickle's BUILD sets attributes on whatever it is
    given: on an allowed class it would patch that class for the whole process (a method of
    ``pathlib.Path`` replaced by a forged file). State is set on instances of DCP's types only."""
    storage = ShardedStorage(tmp_path)
    storage.save("checkpoint_1", *gather_state(objects()), {"iteration": 1})
    folder = tmp_path / "checkpoint_1"
    cls = getattr(__import__(module, fromlist=[name]), name)
    forged = _setattr_pickle(module, name, "patched_by_a_checkpoint", read_dcp_metadata(folder))
    (folder / ".metadata").write_bytes(forged)
    try:
        with pytest.raises(ForgedMetadataError, match=f"sets state on the class {module}.{name}"):
            read_dcp_metadata(folder)
        assert not hasattr(cls, "patched_by_a_checkpoint")
    finally:
        if "patched_by_a_checkpoint" in vars(cls):
            delattr(cls, "patched_by_a_checkpoint")
