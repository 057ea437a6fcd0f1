"""dispose.checkpoints: safe reading of checkpoint files and strict loading with errors naming the keys."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dispose.checkpoints import load_strict, read_state_dict, strip_prefix
from dispose.errors import UserError

WHAT = "a tiny test checkpoint"


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {key: torch.randn_like(value.float()).to(value.dtype)
            for key, value in _Net().state_dict().items()}


@pytest.mark.parametrize("kind", ["zip", "legacy", "nested", "safetensors"])
def test_round_trip(tmp_path, kind) -> None:
    state = _weights()
    path = tmp_path / ("net.safetensors" if kind == "safetensors" else "net.pth")
    if kind == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"step": 3, "state_dict": state} if kind == "nested" else state, path,
                   _use_new_zipfile_serialization=kind != "legacy")
    for mmap in (False, True):  # legacy files cannot be mapped: read normally
        loaded = read_state_dict(path, what=WHAT, mmap=mmap)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    net = _Net()
    load_strict(net, loaded, path)
    assert torch.equal(net.bn.running_var, state["bn.running_var"])


def test_missing_file_names_what_and_where(tmp_path) -> None:
    with pytest.raises(UserError, match=r"absent\.pth not found: expected a tiny test checkpoint; get it "
                                        r"from example\.org/weights"):
        read_state_dict(tmp_path / "absent.pth", what=WHAT, source="example.org/weights")
    with pytest.raises(UserError, match="is a folder, not a file"):
        read_state_dict(tmp_path, what=WHAT)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "safetensors"])
def test_damaged_file_is_one_clear_error(tmp_path, damage) -> None:
    path = tmp_path / ("net.safetensors" if damage == "safetensors" else "net.pth")
    torch.save(_weights(), path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage in ("random", "safetensors"):
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    else:
        path.write_bytes(b"")
    kind = "safetensors" if damage == "safetensors" else "PyTorch"
    for mmap in (False, True):
        with pytest.raises(UserError, match=rf"could not be read as a {kind} file \(.+\): it is damaged "
                                            r"or incomplete, or not a tiny test checkpoint; download it "
                                            r"again from example\.org") as info:
            read_state_dict(path, what=WHAT, source="example.org", mmap=mmap)
        message = str(info.value)
        assert str(path) in message and "\n" not in message and "weights_only` set to `False" not in message


class _Touch:
    """Unpickling this calls Path.touch: code a weight file must never be allowed to run."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return type(self.marker).touch, (self.marker,)


@pytest.mark.parametrize("content", ["code", "class", "module"])
@pytest.mark.parametrize("legacy", [False, True])
def test_file_holding_code_is_refused_and_explained(tmp_path, recwarn, content, legacy) -> None:
    marker = tmp_path / "code-ran"
    objects = {"code": _Touch(marker), "class": torch.optim.Adam, "module": torch.nn.Linear(2, 2)}
    path = tmp_path / "net.pth"
    torch.save({"weight": torch.zeros(2), "extra": objects[content]}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UserError) as info:
        read_state_dict(path, what=WHAT, source="example.org")
    message = str(info.value)
    assert message.startswith(f"{path} holds Python objects beside its tensors (") and "\n" not in message
    assert "never runs code from weight files; get the official file again from example.org" in message
    assert "torch.load(weights_only=False)" in message and "damaged" not in message
    assert not marker.exists() and not recwarn.list


@pytest.mark.parametrize("legacy", [False, True])
def test_other_pickle_protocol_is_explained_without_torch_warnings(tmp_path, recwarn, legacy) -> None:
    # torch warns "Detected pickle protocol 4" before failing on such files: the warning must not show.
    torch.save(_weights(), tmp_path / "net.pth", pickle_protocol=4, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UserError, match=r"net\.pth was saved with pickle protocol 4, which the safe "
                                        r"reader .+ cannot read; get the official file again from "
                                        r"example\.org"):
        read_state_dict(tmp_path / "net.pth", what=WHAT, source="example.org")
    assert not recwarn.list


def test_integer_tensor_where_a_weight_belongs(tmp_path) -> None:
    state = _weights()
    state["conv.weight"] = state["conv.weight"].to(torch.int32)
    save_file(state, str(tmp_path / "net.safetensors"))
    loaded = read_state_dict(tmp_path / "net.safetensors", what=WHAT)
    expected = (rf"^{tmp_path / 'net.safetensors'} is not a tiny test checkpoint: 1 integer tensors "
                r"where the network has floating-point weights \(conv\.weight int32\)$")
    with pytest.raises(UserError, match=expected):
        load_strict(_Net(), loaded, tmp_path / "net.safetensors", what=WHAT)
    with torch.device("meta"):  # the file's tensors would become the parameters
        net = _Net()
    with pytest.raises(UserError, match=expected):
        load_strict(net, loaded, tmp_path / "net.safetensors", what=WHAT)


def test_files_without_a_state_dict(tmp_path) -> None:
    cases = {
        "list.pth": ([torch.zeros(1)], r"holds a list, not a state dict of tensors"),
        "empty.pth": ({}, r"holds nothing, not a state dict of tensors"),
        "other.pth": ({"step": 3, "model": {"a": torch.zeros(1)}},
                      (r"has no 'state_dict' entry, and its top-level entries \(step, model\) are not "
                       r"all tensors")),
        "nested.pth": ({"state_dict": {"a": 1}}, r"its 'state_dict' entry is not a state dict of tensors"),
    }
    for name, (content, expected) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(UserError, match=expected + r"; is it a tiny test checkpoint\?"):
            read_state_dict(tmp_path / name, what=WHAT)
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "model.pth")
    assert set(read_state_dict(tmp_path / "model.pth", what=WHAT, nested=("model", "module"))) == {"a"}


def test_strip_prefix_all_or_none() -> None:
    state = {"module.a": torch.zeros(1), "module.b.c": torch.ones(1)}
    stripped, prefix = strip_prefix(state, "module.", "f.pth")
    assert prefix == "module." and list(stripped) == ["a", "b.c"]
    assert strip_prefix(stripped, "module.", "f.pth") == (stripped, "")
    with pytest.raises(UserError, match=r"f\.pth mixes keys with and without the 'module\.' prefix "
                                        r"\(module\.a, b\.c\)"):
        strip_prefix({"module.a": torch.zeros(1), "b.c": torch.zeros(1)}, "module.", "f.pth")


def test_mismatched_keys_are_named_with_counts() -> None:
    state = _weights()
    del state["conv.bias"]
    state["conv.weight"] = torch.zeros(4, 3, 5, 5)
    state |= {f"extra{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(UserError) as info:
        load_strict(_Net(), state, "net.pth", what=WHAT, file_prefix="module.")
    assert str(info.value) == (
        "net.pth is not a tiny test checkpoint: 1 missing keys (module.conv.bias); "
        "7 unexpected keys (module.extra0, module.extra1, module.extra2, module.extra3, module.extra4, ...); "
        "1 shape mismatches (module.conv.weight (4, 3, 5, 5) != (4, 3, 3, 3))")
    with pytest.raises(UserError, match=r"^x is not a Linear checkpoint: 1 missing keys \(bias\)$"):
        load_strict(torch.nn.Linear(2, 2), {"weight": torch.zeros(2, 2)}, "x")


def test_batchnorm_counters_filled_only_when_asked() -> None:
    state = {k: v for k, v in _weights().items() if not k.endswith("num_batches_tracked")}
    with pytest.raises(UserError, match=r"1 missing keys \(bn\.num_batches_tracked\)"):
        load_strict(_Net(), state, "old.pth")
    net = _Net()
    net.bn.num_batches_tracked.fill_(7)
    load_strict(net, state, "old.pth", fill_batchnorm_counters=True)
    assert int(net.bn.num_batches_tracked) == 0 and torch.equal(net.conv.weight, state["conv.weight"])
    with pytest.raises(UserError, match=r"1 missing keys \(conv\.bias\)$"):  # only the counters are filled
        load_strict(_Net(), {k: v for k, v in state.items() if k != "conv.bias"}, "old.pth",
                    fill_batchnorm_counters=True)


def test_meta_module_takes_the_tensors() -> None:
    state = {k: v.half() if v.is_floating_point() else v for k, v in _weights().items()}
    del state["bn.num_batches_tracked"]
    with torch.device("meta"):
        net = _Net()
    load_strict(net, state, "half.pth", fill_batchnorm_counters=True)
    assert net.conv.weight.data_ptr() == state["conv.weight"].data_ptr()  # assigned, not copied
    assert net.conv.weight.dtype == torch.float16 and not net.bn.num_batches_tracked.is_meta
    assert isinstance(net.conv.weight, torch.nn.Parameter)

    with torch.device("meta"):
        net = _Net()
    net.register_buffer("scratch", torch.empty(2, device="meta"), persistent=False)
    with pytest.raises(RuntimeError,
                       match="still has tensors without values after loading half.pth: scratch"):
        load_strict(net, state, "half.pth", fill_batchnorm_counters=True)
