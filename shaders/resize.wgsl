// Separable resize with precomputed weight tables (gpu-node/src/gpu/filter.rs builds them for
// Lanczos3, Mitchell, Catmull-Rom, bilinear and box, the same tables the f64 reference uses).
//
// RGBA images are filtered in linear light with premultiplied alpha, so that dark fringes and
// colour halos do not appear at transparent edges:
//   `horizontal`: src (src_w x src_h, packed RGBA8 sRGB) -> mid (dst_w x src_h, linear
//                 premultiplied vec4<f32>);
//   `vertical`:   mid -> dst (dst_w x dst_h, packed RGBA8 sRGB, straight alpha).
// Video planes (8-bit Y, U or V, already gamma-coded as video is by convention) are filtered
// as they are:
//   `horizontal_plane`: src bytes (row stride `src_stride` bytes) -> mid (dst_w x src_h, f32);
//   `vertical_plane`:   mid -> dst bytes, 4 per invocation (row stride `dst_stride` bytes, a
//                       multiple of 4).
// For output sample o of an axis, taps start at starts[o] and weigh coefs[o * taps + k]; the
// y axis's entries follow the x axis's in both arrays (at offsets y_starts / y_coefs). Padding
// taps have weight 0 and their index is clamped into the image.

struct Params {
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
    taps_x: u32,
    taps_y: u32,
    y_starts: u32,
    y_coefs: u32,
    src_stride: u32,
    dst_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> mid: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;
@group(0) @binding(4) var<storage, read> coefs: array<f32>;
@group(0) @binding(5) var<storage, read> starts: array<u32>;
// sRGB byte -> linear light.
@group(0) @binding(6) var<storage, read> lut: array<f32, 256>;

fn linear_to_srgb(c: f32) -> f32 {
    if c <= 0.0031308 {
        return c * 12.92;
    }
    return 1.055 * pow(c, 1.0 / 2.4) - 0.055;
}

fn load_linear_premul(p: u32) -> vec4<f32> {
    let a = f32(p >> 24u) * (1.0 / 255.0);
    return vec4<f32>(
        lut[p & 0xffu] * a,
        lut[(p >> 8u) & 0xffu] * a,
        lut[(p >> 16u) & 0xffu] * a,
        a,
    );
}

@compute @workgroup_size(64, 4)
fn horizontal(@builtin(global_invocation_id) id: vec3<u32>) {
    let x = id.x;
    let y = id.y;
    if x >= params.dst_w || y >= params.src_h {
        return;
    }
    let start = starts[x];
    let base = x * params.taps_x;
    let row = y * params.src_w;
    let last = params.src_w - 1u;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < params.taps_x; k++) {
        let i = min(start + k, last);
        acc += coefs[base + k] * load_linear_premul(src[row + i]);
    }
    mid[y * params.dst_w + x] = acc;
}

@compute @workgroup_size(64, 4)
fn vertical(@builtin(global_invocation_id) id: vec3<u32>) {
    let x = id.x;
    let y = id.y;
    if x >= params.dst_w || y >= params.dst_h {
        return;
    }
    let start = starts[params.y_starts + y];
    let base = params.y_coefs + y * params.taps_y;
    let last = params.src_h - 1u;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < params.taps_y; k++) {
        let i = min(start + k, last);
        acc += coefs[base + k] * mid[i * params.dst_w + x];
    }
    let a = clamp(acc.w, 0.0, 1.0);
    var rgb = vec3<f32>(0.0);
    if a > 0.0 {
        rgb = clamp(acc.xyz / a, vec3<f32>(0.0), vec3<f32>(1.0));
    }
    let out = vec4<f32>(linear_to_srgb(rgb.x), linear_to_srgb(rgb.y), linear_to_srgb(rgb.z), a);
    dst[y * params.dst_w + x] = pack4x8unorm(out);
}

fn src_byte(index: u32) -> f32 {
    return f32((src[index >> 2u] >> ((index & 3u) * 8u)) & 0xffu);
}

// Planes reuse `mid` as vec4s holding 4 consecutive f32 samples of a row (dst_w padded to 4).
@compute @workgroup_size(64, 4)
fn horizontal_plane(@builtin(global_invocation_id) id: vec3<u32>) {
    let x4 = id.x;
    let y = id.y;
    let words = (params.dst_w + 3u) / 4u;
    if x4 >= words || y >= params.src_h {
        return;
    }
    let row = y * params.src_stride;
    let last = params.src_w - 1u;
    var out = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let x = min(x4 * 4u + j, params.dst_w - 1u);
        let start = starts[x];
        let base = x * params.taps_x;
        var acc = 0.0;
        for (var k = 0u; k < params.taps_x; k++) {
            acc += coefs[base + k] * src_byte(row + min(start + k, last));
        }
        out[j] = acc;
    }
    mid[y * words + x4] = out;
}

@compute @workgroup_size(64, 4)
fn vertical_plane(@builtin(global_invocation_id) id: vec3<u32>) {
    let x4 = id.x;
    let y = id.y;
    let words = (params.dst_w + 3u) / 4u;
    if x4 >= words || y >= params.dst_h {
        return;
    }
    let start = starts[params.y_starts + y];
    let base = params.y_coefs + y * params.taps_y;
    let last = params.src_h - 1u;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < params.taps_y; k++) {
        acc += coefs[base + k] * mid[min(start + k, last) * words + x4];
    }
    dst[y * (params.dst_stride / 4u) + x4] = pack4x8unorm(clamp(acc / 255.0, vec4<f32>(0.0), vec4<f32>(1.0)));
}
