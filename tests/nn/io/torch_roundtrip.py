#!/usr/bin/env python3
"""torch_roundtrip.py — nabla <-> PyTorch through safetensors files, using
only the published format (struct + json + torch.frombuffer), so that it
works without the safetensors package.

nabla's Dense/Linear kernel is [in, out] (Keras's layout); PyTorch's
Linear.weight is [out, in]. Both are named "<index>.weight", so a 2-D
".weight" is transposed on the way in and on the way out (bit-exact).
Name nabla's layers like PyTorch's: nb_sequential(nb_linear(4, 8),
nb_relu_layer(), nb_linear(8, 3)) is torch.nn.Sequential(Linear(4, 8),
ReLU(), Linear(8, 3)), parameters "0.weight", "0.bias", "2.weight", "2.bias".

Used by tests/nn/io/test_checkpoint.c:
    torch_roundtrip.py NABLA_FILE OUT_DIR
loads NABLA_FILE into the torch model, runs it on fixed inputs, and writes
OUT_DIR/outputs.safetensors (x, y = model(x), y2 = fresh_model(x)),
OUT_DIR/back.safetensors (the loaded state_dict written back for nabla) and
OUT_DIR/torch.safetensors (a freshly initialised torch model's state_dict).
"""
import json
import struct
import sys

import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", info["dtype"]
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        b = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def nabla_to_torch(tensors):
    """[in, out] kernels -> [out, in] Linear weights; biases as they are."""
    return {k: v.t().contiguous() if k.endswith(".weight") and v.dim() == 2 else v
            for k, v in tensors.items()}


torch_to_nabla = nabla_to_torch  # the same transpose, the other way


def make_model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def main(nabla_file, out_dir):
    model = make_model()
    model.load_state_dict(nabla_to_torch(read_safetensors(nabla_file)))
    x = torch.linspace(-2, 2, 20).reshape(5, 4)
    torch.manual_seed(0)
    fresh = make_model()
    with torch.no_grad():
        y, y2 = model(x), fresh(x)
    write_safetensors(out_dir + "/outputs.safetensors", {"x": x, "y": y, "y2": y2})
    write_safetensors(out_dir + "/back.safetensors", torch_to_nabla(model.state_dict()))
    write_safetensors(out_dir + "/torch.safetensors", torch_to_nabla(fresh.state_dict()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
