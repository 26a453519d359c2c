#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, AddressSanitizer) of every parser that reads
# untrusted bytes: deploy/fuzz-parsers.sh [seconds per target] [targets…]
#
# Seeds come from ../shared/media (or $KILN_MEDIA_DIR): each photo cut down to a small image in
# every format Kiln reads, each clip cut to a fraction of a second in several containers, plus
# hand-written headers, URLs, multipart bodies and tune specs. Corpora grow under
# fuzz/corpus/<target> and are reused by the next run; a crash is saved under
# fuzz/artifacts/<target>/ and the script fails (turn it into a regression test). The summary
# prints, per target, the runs, the executions per second and libFuzzer's edge coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(image_convert media_probe multipart_fields urls range_header signatures tune_spec)
fi
media="${KILN_MEDIA_DIR:-$(cd .. && pwd)/shared/media}"
toolchain=nightly
rustup run "$toolchain" rustc --version >/dev/null 2>&1 || toolchain=stable
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
fuzz() {
    if [ "$toolchain" = nightly ]; then cargo +nightly fuzz "$@"; else RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; fi
}
# No console in these builds (it is not parsed input), and no GPU: images resize on the CPU.
export KILN_CONSOLE=skip KILN_IMAGE_RESIZER=cpu
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
fuzz build -O

seed() { mkdir -p "fuzz/corpus/$1"; }
# image_convert: two parameter bytes, then the image.
seed image_convert
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
for photo in "$media"/photo/*; do
    case "$photo" in
        *.heic) cp "$photo" "$tmp/in-$i.heic"; printf '\x06\x03' | cat - "$photo" > "fuzz/corpus/image_convert/heic-$i" ;;
        *)
            for ext in jpg png webp gif tiff; do
                ffmpeg -v error -y -i "$photo" -vf scale=48:-2 -frames:v 1 "$tmp/s-$i.$ext"
                printf "\\x$(printf %02x $((i % 7)))\\x03" | cat - "$tmp/s-$i.$ext" > "fuzz/corpus/image_convert/$ext-$i"
            done
            fuzz/target/x86_64-unknown-linux-gnu/release/make_seeds "$tmp/s-$i.png" "$tmp/s-$i.avif"
            printf '\x00\x01' | cat - "$tmp/s-$i.avif" > "fuzz/corpus/image_convert/avif-$i"
            ;;
    esac
    i=$((i + 1))
done
# An animated GIF and WebP.
ffmpeg -v error -y -f lavfi -i testsrc2=size=32x24:rate=5 -t 1 "$tmp/anim.gif"
printf '\x06\x00' | cat - "$tmp/anim.gif" > fuzz/corpus/image_convert/anim-gif
ffmpeg -v error -y -f lavfi -i testsrc2=size=32x24:rate=5 -t 1 -loop 0 "$tmp/anim.webp"
printf '\x02\x00' | cat - "$tmp/anim.webp" > fuzz/corpus/image_convert/anim-webp

# media_probe: every clip, a fraction of a second, small, in several containers.
seed media_probe
i=0
for clip in "$media"/video/*; do
    for ext in mp4 mkv mov ts flv; do
        ffmpeg -v error -y -i "$clip" -t 0.3 -vf scale=64:-2 -c:v libx264 -preset ultrafast \
            -c:a aac -ac 1 "fuzz/corpus/media_probe/$i.$ext" || true
    done
    ffmpeg -v error -y -i "$clip" -t 0.3 -vf scale=64:-2 -c:v libvpx-vp9 -an \
        "fuzz/corpus/media_probe/$i.webm" || true
    i=$((i + 1))
done
ffmpeg -v error -y -f lavfi -i testsrc2=size=64x48:rate=10 -t 0.3 -metadata:s:v rotate=90 \
    -c:v libx264 -preset ultrafast fuzz/corpus/media_probe/rotated.mp4

seed multipart_fields
printf 'XyZ\n--XyZ\r\nContent-Disposition: form-data; name="codec"\r\n\r\nh264\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\nContent-Type: video/mp4\r\n\r\n\x00\x00\x00\x18ftypmp42\r\n--XyZ--\r\n' > fuzz/corpus/multipart_fields/two-fields
printf 'b\n--b\r\nContent-Disposition: form-data; name="quality"\r\n\r\n\xff\xfe\r\n--b--\r\n' > fuzz/corpus/multipart_fields/not-utf8

seed urls
printf 'https://media.example.com/a/b.mp4?x=1' > fuzz/corpus/urls/https
printf '10.0.0.0/8,files.internal\nhttp://10.1.2.3:8080/a.mp4' > fuzz/corpus/urls/allowlisted
printf 'https://[::ffff:127.0.0.1]/a' > fuzz/corpus/urls/mapped
printf 'https://user:pw@example.com/a' > fuzz/corpus/urls/credentials
printf '{"bucket":"b","prefix":"out/","endpoint":"https://s3.example.com","region":"eu-west-1"}' > fuzz/corpus/urls/s3
printf '{"bucket":"b","key":"../../etc/passwd","credentials":{"access_key_id":"a","secret_access_key":"b"}}' > fuzz/corpus/urls/s3-key

seed range_header
for r in 'bytes=0-99' 'bytes=-500' 'bytes=100-' 'bytes=0-0,5-9' 'bytes=18446744073709551615-'; do
    printf '\x00\x10\x00\x00\x00\x00\x00\x00%s' "$r" > "fuzz/corpus/range_header/$(echo "$r" | tr -c 'a-z0-9' _)"
done

seed signatures
printf '0190f3b2-7c1d-7000-8000-000000000001\x00\x00\x00\x00\x00\x00\x00\x00deadbeef\x00abcdef' > fuzz/corpus/signatures/plain

seed tune_spec
sed -n '/^name = "x264 vs x265/,/^```$/p' README.md | sed '$d' > fuzz/corpus/tune_spec/readme.toml || true
printf 'clips = ["a.mp4"]\nresolutions = ["source", "360p", "1280x720"]\nbaseline = "x265 slow 360p"\n[[encoders]]\nencoder = "x265"\npresets = ["slow"]\ncrf = [22, 28]\n[[encoders]]\nencoder = "svt-av1"\nbitrates_kbps = [300, 900]\n' > fuzz/corpus/tune_spec/sweep.toml

summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/artifacts/$t"
    max_len=65536
    [ "$t" = image_convert ] && max_len=2000000
    log="fuzz/artifacts/$t/run.log"
    if fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len="$max_len" \
        -rss_limit_mb=4096 -timeout=20 -artifact_prefix="fuzz/artifacts/$t/" \
        -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status="CRASH (fuzz/artifacts/$t/)"
        failed=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | awk '{print $2}')
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | awk '{print $2}')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    corp=$(ls "fuzz/corpus/$t" | wc -l)
    summary+=("$(printf '%-18s %10s runs %7s/s  cov %6s  ft %6s  corpus %5s  %s' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$status")")
done
echo
echo "fuzzed ${secs}s per target:"
printf '%s\n' "${summary[@]}"
exit $failed
