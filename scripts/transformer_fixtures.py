"""ONNX fixtures of transformer blocks, defined here as plain PyTorch modules (no timm needed):
a tiny ViT in timm's form (4x4 patch conv, class token, position table, pre-norm blocks with a
packed qkv Linear, multi-head attention written out as reshape/permute/unbind/matmul/softmax,
a GELU MLP, final LayerNorm, class-token head), and torchvision's VisionTransformer and
SwinTransformer at tiny sizes (nn.MultiheadAttention; shifted windows over padded maps), and
timm's SwinTransformer (made only where timm is installed). Exported as `scripts/block_fixtures.py` exports
its blocks: opset 17, the TorchScript exporter, a dynamic batch axis; a reference input
`NAME.x.bin` (batch 2) and PyTorch's output `NAME.y.bin` as raw little-endian f32, their shapes
in `NAME.json`.

    python3 scripts/transformer_fixtures.py [OUTDIR [NAME,NAME...]]

prints each fixture's size, its op types and onnxruntime's max abs difference from PyTorch.
"""
import json, os, sys
import torch
import torch.nn as nn

class Attention(nn.Module):
    def __init__(s, dim, heads):
        super().__init__()
        s.heads, s.scale = heads, (dim // heads) ** -0.5
        s.qkv = nn.Linear(dim, 3 * dim); s.proj = nn.Linear(dim, dim)
    def forward(s, x):
        b, n, c = x.shape
        qkv = s.qkv(x).reshape(b, n, 3, s.heads, c // s.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * s.scale).softmax(dim=-1)
        return s.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

class Block(nn.Module):
    def __init__(s, dim, heads, mlp):
        super().__init__()
        s.norm1 = nn.LayerNorm(dim, eps=1e-6); s.attn = Attention(dim, heads)
        s.norm2 = nn.LayerNorm(dim, eps=1e-6)
        s.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
    def forward(s, x):
        x = x + s.attn(s.norm1(x))
        return x + s.mlp(s.norm2(x))

class TinyViT(nn.Module):
    def __init__(s, c_in=3, side=16, patch=4, dim=16, heads=2, depth=2, mlp=32, classes=10):
        super().__init__()
        s.patch_embed = nn.Conv2d(c_in, dim, patch, patch)
        tokens = (side // patch) ** 2
        s.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        s.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.5)
        s.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        s.norm = nn.LayerNorm(dim, eps=1e-6); s.head = nn.Linear(dim, classes)
    def forward(s, x):
        x = s.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((s.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + s.pos_embed
        return s.head(s.norm(s.blocks(x))[:, 0])

def torchvision_vit():
    """torchvision's VisionTransformer, tiny: its nn.MultiheadAttention exports batch-second
    ([T, N, C]) with the heads folded into the batch axis ([T, N*heads, D]), queries and keys
    each scaled by sqrt(scale)."""
    from torchvision.models.vision_transformer import VisionTransformer
    m = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
                          mlp_dim=32, num_classes=10)
    with torch.no_grad():  # torchvision zero-initialises the head; make it say something
        m.heads.head.weight.normal_(0, 0.2)
        m.class_token.normal_(0, 0.5)
    return m

def torchvision_swin():
    """torchvision's SwinTransformer, tiny: 2x2 patches, windows of 4, three stages on a 20x20
    input, so the first stage (10x10) is padded to 12x12 and shifted (the mask over padding),
    the second (5x5) padded to 8x8 and shifted, the third (3x3, after merging an odd 5x5) one
    padded window, unshifted. Biases, LayerNorms and position tables are randomised so each
    says something (zero biases export as Adds of zero, which the import may drop)."""
    from torchvision.models.swin_transformer import SwinTransformer
    m = SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4],
                        window_size=[4, 4], num_classes=10)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
            elif "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    return m

def timm_swin():
    """timm's SwinTransformer, tiny (timm is only needed to remake this fixture): its window
    partition stops at [N*windows, w, w, C], its MLP runs on [N, H*W, C] rows, its patch merging
    is a reshape and permute, its head pools channels-last; 16x16 input, windows of 4, so the
    first stage (8x8) is shifted and the second (4x4) one window. timm rolls before it pads, so
    only sizes of whole windows import."""
    from timm.models.swin_transformer import SwinTransformer
    m = SwinTransformer(img_size=16, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2),
                        num_heads=(2, 4), num_classes=10)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
            elif "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    return m

FIXTURES = {"tiny_vit": (TinyViT, (3, 16, 16)), "torchvision_vit": (torchvision_vit, (3, 16, 16)),
            "timm_swin": (timm_swin, (3, 16, 16)),
            # The exporter folds the gathered position bias and the mask into constants by
            # default; unfolded, the file computes them (a Gather of the table's rows).
            "tiny_swin": (torchvision_swin, (3, 20, 20)),
            "tiny_swin_unfolded": (torchvision_swin, (3, 20, 20))}

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "crates/shears-onnx/tests/fixtures/blocks"
    os.makedirs(out, exist_ok=True)
    import onnx, onnxruntime as ort
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else list(FIXTURES)
    for name, (build, shape) in FIXTURES.items():
        if name not in only:
            continue
        torch.manual_seed(0)
        model = build().eval()
        x = torch.randn(2, *shape)
        path = f"{out}/{name}.onnx"
        torch.onnx.export(model, x, path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17,
                          dynamo=False, do_constant_folding=not name.endswith("_unfolded"))
        with torch.no_grad():
            y = model(x)
        x.numpy().astype("<f4").tofile(f"{out}/{name}.x.bin")
        y.numpy().astype("<f4").tofile(f"{out}/{name}.y.bin")
        json.dump({"x": list(x.shape), "y": list(y.shape)}, open(f"{out}/{name}.json", "w"))
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        got = ort.InferenceSession(path).run(None, {"x": x.numpy()})[0]
        diff = float(abs(got - y.numpy()).max())
        print(f"{name}: {os.path.getsize(path)} bytes, onnxruntime max abs diff {diff:.3g}")
        print(f"  ops: {' '.join(ops)}")

if __name__ == "__main__":
    main()
