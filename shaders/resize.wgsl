// Separable Lanczos3 resize of RGBA8 sRGB images, filtered in linear light with premultiplied
// alpha (so dark fringes and colour halos do not appear at transparent edges).
//
// Pass 1 `horizontal`: src (src_w x src_h, packed RGBA8 sRGB) -> mid (dst_w x src_h, linear
// premultiplied vec4<f32>). Pass 2 `vertical`: mid -> dst (dst_w x dst_h, packed RGBA8 sRGB).
// Taps that fall outside the image are dropped and the remaining weights renormalised; the CPU
// path in gpu-node/src/gpu/cpu.rs does exactly the same arithmetic in f64.

struct Params {
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> mid: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

const PI: f32 = 3.141592653589793;

fn srgb_to_linear(c: f32) -> f32 {
    if c <= 0.04045 {
        return c / 12.92;
    }
    return pow((c + 0.055) / 1.055, 2.4);
}

fn linear_to_srgb(c: f32) -> f32 {
    if c <= 0.0031308 {
        return c * 12.92;
    }
    return 1.055 * pow(c, 1.0 / 2.4) - 0.055;
}

fn sinc(x: f32) -> f32 {
    if abs(x) < 1e-6 {
        return 1.0;
    }
    let px = PI * x;
    return sin(px) / px;
}

fn lanczos3(x: f32) -> f32 {
    if abs(x) >= 3.0 {
        return 0.0;
    }
    return sinc(x) * sinc(x / 3.0);
}

fn load_linear_premul(p: u32) -> vec4<f32> {
    let c = unpack4x8unorm(p);
    let a = c.w;
    return vec4<f32>(srgb_to_linear(c.x) * a, srgb_to_linear(c.y) * a, srgb_to_linear(c.z) * a, a);
}

// Weights of one output sample: centre in source coordinates, and the filter's stretch.
struct Span {
    lo: i32,
    hi: i32,
    center: f32,
    stretch: f32,
}

fn span(out_index: u32, src_len: u32, dst_len: u32) -> Span {
    let scale = f32(src_len) / f32(dst_len);
    let stretch = max(scale, 1.0);
    let support = 3.0 * stretch;
    let center = (f32(out_index) + 0.5) * scale;
    let lo = max(i32(floor(center - support - 0.5)), 0);
    let hi = min(i32(ceil(center + support - 0.5)), i32(src_len) - 1);
    return Span(lo, hi, center, stretch);
}

@compute @workgroup_size(16, 16)
fn horizontal(@builtin(global_invocation_id) id: vec3<u32>) {
    let x = id.x;
    let y = id.y;
    if x >= params.dst_w || y >= params.src_h {
        return;
    }
    let s = span(x, params.src_w, params.dst_w);
    var acc = vec4<f32>(0.0);
    var wsum = 0.0;
    let row = y * params.src_w;
    for (var i = s.lo; i <= s.hi; i++) {
        let w = lanczos3((f32(i) + 0.5 - s.center) / s.stretch);
        acc += w * load_linear_premul(src[row + u32(i)]);
        wsum += w;
    }
    mid[y * params.dst_w + x] = acc / wsum;
}

@compute @workgroup_size(16, 16)
fn vertical(@builtin(global_invocation_id) id: vec3<u32>) {
    let x = id.x;
    let y = id.y;
    if x >= params.dst_w || y >= params.dst_h {
        return;
    }
    let s = span(y, params.src_h, params.dst_h);
    var acc = vec4<f32>(0.0);
    var wsum = 0.0;
    for (var i = s.lo; i <= s.hi; i++) {
        let w = lanczos3((f32(i) + 0.5 - s.center) / s.stretch);
        acc += w * mid[u32(i) * params.dst_w + x];
        wsum += w;
    }
    let c = acc / wsum;
    let a = clamp(c.w, 0.0, 1.0);
    var rgb = vec3<f32>(0.0);
    if a > 0.0 {
        rgb = clamp(c.xyz / a, vec3<f32>(0.0), vec3<f32>(1.0));
    }
    let out = vec4<f32>(linear_to_srgb(rgb.x), linear_to_srgb(rgb.y), linear_to_srgb(rgb.z), a);
    dst[y * params.dst_w + x] = pack4x8unorm(out);
}
