//! `make_seeds <in> <out.avif>`: an AVIF seed for `image_convert`, made by Kiln's own encoder
//! (FFmpeg 5.1, which makes the other seeds, writes no AVIF).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: make_seeds <in> <out.avif>");
        std::process::exit(2);
    };
    let bytes = std::fs::read(input).expect("read the input");
    let params = kiln_gpu_node::imaging::ConvertParams {
        format: Some(kiln_gpu_node::imaging::OutputFormat::Avif),
        quality: Some(40),
        ..Default::default()
    };
    let out = kiln_gpu_node::imaging::convert(&bytes, &params).expect("convert to AVIF");
    std::fs::write(output, out.bytes).expect("write the seed");
}
