//! What FFmpeg 5.1's `dash` muxer leaves to do by hand once the segments are written: its HLS
//! master playlist has no `AVERAGE-BANDWIDTH` or `FRAME-RATE`, and its `BANDWIDTH` (like the
//! MPD's `bandwidth`) is the encoder's nominal rate or the first segment's, not what the
//! segments hold; its media playlists carry wall-clock `PROGRAM-DATE-TIME`s that mean nothing
//! for on-demand video and no `PLAYLIST-TYPE`. Everything else (segments, init segments,
//! segment timelines, codec strings) is FFmpeg's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_protocol::ladder::{Packaging, DASH_MANIFEST, MASTER_PLAYLIST};

use crate::media::MediaError;

/// One video rendition as measured from its segments.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RenditionStats {
    pub codecs: String,
    /// Peak segment bitrate, audio's peak added.
    pub peak_bps: u64,
    /// Mean bitrate, audio's mean added.
    pub average_bps: u64,
    pub playlist: String,
}

pub(super) struct Measured {
    pub video: Vec<RenditionStats>,
    pub files: Vec<PathBuf>,
}

/// Bitrates of one media playlist's segments.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Rates {
    pub peak_bps: u64,
    pub average_bps: u64,
}

fn io(what: &str, e: std::io::Error) -> MediaError {
    MediaError::Io(format!("{what}: {e}"))
}

/// Measure, rewrite the manifests, drop the packaging not asked for, list the tree.
pub(super) fn finish(
    dir: &Path,
    packaging: &[Packaging],
    fps: f64,
) -> Result<Measured, MediaError> {
    let master_path = dir.join(MASTER_PLAYLIST);
    let master =
        std::fs::read_to_string(&master_path).map_err(|e| io("read master playlist", e))?;
    let parsed = parse_master(&master);
    let mut rates: BTreeMap<String, Rates> = BTreeMap::new();
    let playlists = parsed
        .variants
        .iter()
        .map(|v| v.uri.clone())
        .chain(parsed.audio_uri.clone());
    for uri in playlists {
        let path = dir.join(&uri);
        let text = std::fs::read_to_string(&path).map_err(|e| io("read media playlist", e))?;
        let (clean, segments) = clean_media_playlist(&text);
        let mut sized = Vec::new();
        for (seg, secs) in segments {
            let bytes = std::fs::metadata(dir.join(&seg))
                .map_err(|e| io("stat segment", e))?
                .len();
            sized.push((bytes, secs));
        }
        rates.insert(uri.clone(), segment_rates(&sized));
        std::fs::write(&path, clean).map_err(|e| io("write media playlist", e))?;
    }
    let audio = parsed
        .audio_uri
        .as_ref()
        .and_then(|u| rates.get(u).copied())
        .unwrap_or_default();
    let video: Vec<RenditionStats> = parsed
        .variants
        .iter()
        .map(|v| {
            let r = rates.get(&v.uri).copied().unwrap_or_default();
            RenditionStats {
                codecs: v
                    .attr("CODECS")
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
                peak_bps: r.peak_bps + audio.peak_bps,
                average_bps: r.average_bps + audio.average_bps,
                playlist: v.uri.clone(),
            }
        })
        .collect();
    std::fs::write(&master_path, render_master(&parsed, &video, fps))
        .map_err(|e| io("write master playlist", e))?;

    let mpd_path = dir.join(DASH_MANIFEST);
    let mpd = std::fs::read_to_string(&mpd_path).map_err(|e| io("read MPD", e))?;
    let mut by_rep: Vec<(usize, u64)> = parsed
        .variants
        .iter()
        .filter_map(|v| Some((stream_of(&v.uri)?, rates.get(&v.uri)?.peak_bps)))
        .collect();
    if let Some(u) = &parsed.audio_uri {
        if let Some(i) = stream_of(u) {
            by_rep.push((i, audio.peak_bps));
        }
    }
    std::fs::write(&mpd_path, patch_mpd_bandwidth(&mpd, &by_rep))
        .map_err(|e| io("write MPD", e))?;

    if !packaging.contains(&Packaging::Hls) {
        for f in list(dir)? {
            if f.extension().is_some_and(|e| e == "m3u8") {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
    }
    if !packaging.contains(&Packaging::Dash) {
        let _ = std::fs::remove_file(&mpd_path);
    }
    let entry = if packaging.contains(&Packaging::Hls) {
        MASTER_PLAYLIST
    } else {
        DASH_MANIFEST
    };
    let mut files: Vec<PathBuf> = list(dir)?
        .into_iter()
        .filter(|f| f != Path::new(entry))
        .collect();
    files.push(PathBuf::from(entry));
    Ok(Measured { video, files })
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, MediaError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io("list the ladder folder", e))? {
        let e = e.map_err(|e| io("list the ladder folder", e))?;
        if e.file_type().is_ok_and(|t| t.is_file()) {
            out.push(PathBuf::from(e.file_name()));
        }
    }
    out.sort();
    Ok(out)
}

/// `media_3.m3u8` → 3: FFmpeg names media playlists by output stream, which is also the
/// MPD Representation id.
pub(super) fn stream_of(uri: &str) -> Option<usize> {
    uri.strip_prefix("media_")?
        .strip_suffix(".m3u8")?
        .parse()
        .ok()
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Variant {
    /// Attributes in their order, values as written (quotes kept).
    pub attrs: Vec<(String, String)>,
    pub uri: String,
}

impl Variant {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Master {
    /// `#EXT-X-MEDIA` lines, as written.
    pub media: Vec<String>,
    pub audio_uri: Option<String>,
    pub variants: Vec<Variant>,
}

/// Split an attribute list at the commas outside quotes.
pub(super) fn attributes(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in list.chars().chain(std::iter::once(',')) {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                if let Some((k, v)) = cur.split_once('=') {
                    out.push((k.trim().to_string(), v.trim().to_string()));
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    out
}

pub(super) fn parse_master(text: &str) -> Master {
    let mut m = Master {
        media: Vec::new(),
        audio_uri: None,
        variants: Vec::new(),
    };
    let mut pending: Option<Vec<(String, String)>> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("#EXT-X-MEDIA:") {
            let attrs = attributes(rest);
            let is_audio = attrs.iter().any(|(k, v)| k == "TYPE" && v == "AUDIO");
            if let Some((_, uri)) = attrs.iter().find(|(k, _)| k == "URI") {
                if is_audio && m.audio_uri.is_none() {
                    m.audio_uri = Some(uri.trim_matches('"').to_string());
                }
            }
            m.media.push(line.to_string());
        } else if let Some(rest) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            pending = Some(attributes(rest));
        } else if !line.starts_with('#') {
            if let Some(attrs) = pending.take() {
                m.variants.push(Variant {
                    attrs,
                    uri: line.to_string(),
                });
            }
        }
    }
    m
}

/// The master playlist with measured `BANDWIDTH` and `AVERAGE-BANDWIDTH`, and `FRAME-RATE`;
/// every other attribute as FFmpeg wrote it.
pub(super) fn render_master(m: &Master, stats: &[RenditionStats], fps: f64) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for line in &m.media {
        out.push_str(line);
        out.push('\n');
    }
    for (v, s) in m.variants.iter().zip(stats) {
        let mut attrs = vec![
            ("BANDWIDTH".to_string(), s.peak_bps.to_string()),
            ("AVERAGE-BANDWIDTH".to_string(), s.average_bps.to_string()),
        ];
        for (k, val) in &v.attrs {
            if !matches!(k.as_str(), "BANDWIDTH" | "AVERAGE-BANDWIDTH" | "FRAME-RATE") {
                attrs.push((k.clone(), val.clone()));
            }
            if k == "RESOLUTION" {
                attrs.push(("FRAME-RATE".to_string(), format!("{fps:.3}")));
            }
        }
        if v.attr("RESOLUTION").is_none() {
            attrs.push(("FRAME-RATE".to_string(), format!("{fps:.3}")));
        }
        let joined: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "#EXT-X-STREAM-INF:{}\n{}\n",
            joined.join(","),
            v.uri
        ));
    }
    out
}

/// A media playlist without wall-clock dates and marked on-demand, and its segments with
/// their durations.
pub(super) fn clean_media_playlist(text: &str) -> (String, Vec<(String, f64)>) {
    let mut out = String::new();
    let mut segments = Vec::new();
    let mut duration = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#EXT-X-PROGRAM-DATE-TIME") || t.starts_with("#EXT-X-PLAYLIST-TYPE") {
            continue;
        }
        out.push_str(t);
        out.push('\n');
        if t.starts_with("#EXT-X-VERSION") {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        } else if let Some(d) = t.strip_prefix("#EXTINF:") {
            duration = d
                .split(',')
                .next()
                .and_then(|s| s.trim().parse::<f64>().ok());
        } else if !t.is_empty() && !t.starts_with('#') {
            if let Some(d) = duration.take() {
                segments.push((t.to_string(), d));
            }
        }
    }
    (out, segments)
}

/// Peak and mean bitrate of segments given as (bytes, seconds). The peak ignores segments
/// under half a second (a stream's short last piece), unless there is nothing else.
pub(super) fn segment_rates(segments: &[(u64, f64)]) -> Rates {
    let bits: f64 = segments.iter().map(|(b, _)| *b as f64 * 8.0).sum();
    let secs: f64 = segments.iter().map(|(_, d)| d).sum();
    let rate = |(b, d): &(u64, f64)| *b as f64 * 8.0 / d.max(1e-3);
    let full: Vec<f64> = segments
        .iter()
        .filter(|(_, d)| *d >= 0.5)
        .map(rate)
        .collect();
    let peak = if full.is_empty() {
        segments.iter().map(rate).fold(0.0, f64::max)
    } else {
        full.into_iter().fold(0.0, f64::max)
    };
    Rates {
        peak_bps: peak.ceil() as u64,
        average_bps: if secs > 0.0 {
            (bits / secs).ceil() as u64
        } else {
            0
        },
    }
}

/// Set `bandwidth="…"` of each `<Representation id="i"` to the measured figure.
pub(super) fn patch_mpd_bandwidth(mpd: &str, by_rep: &[(usize, u64)]) -> String {
    let mut out = mpd.to_string();
    for (id, bps) in by_rep {
        let tag = format!("<Representation id=\"{id}\"");
        let Some(start) = out.find(&tag) else {
            continue;
        };
        let Some(end) = out[start..].find('>').map(|e| start + e) else {
            continue;
        };
        let Some(b) = out[start..end].find("bandwidth=\"").map(|b| start + b + 11) else {
            continue;
        };
        let Some(close) = out[b..end].find('"').map(|c| b + c) else {
            continue;
        };
        out.replace_range(b..close, &bps.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"group_A1\",NAME=\"audio_2\",DEFAULT=YES,URI=\"media_2.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=673858,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"group_A1\"\n\
media_0.m3u8\n\n\
#EXT-X-STREAM-INF:BANDWIDTH=130234,RESOLUTION=320x180,CODECS=\"avc1.64000c,mp4a.40.2\",AUDIO=\"group_A1\"\n\
media_1.m3u8\n";

    #[test]
    fn the_master_gets_measured_bandwidths_and_frame_rate() {
        let m = parse_master(MASTER);
        assert_eq!(m.audio_uri.as_deref(), Some("media_2.m3u8"));
        assert_eq!(m.variants.len(), 2);
        assert_eq!(
            m.variants[0].attr("CODECS"),
            Some("\"avc1.64001e,mp4a.40.2\"")
        );
        let stats = |peak, avg, uri: &str| RenditionStats {
            codecs: String::new(),
            peak_bps: peak,
            average_bps: avg,
            playlist: uri.into(),
        };
        let text = render_master(
            &m,
            &[
                stats(900_000, 700_000, "media_0.m3u8"),
                stats(200_000, 150_000, "media_1.m3u8"),
            ],
            25.0,
        );
        assert!(
            text.contains(
                "#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,\
FRAME-RATE=25.000,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"group_A1\"\nmedia_0.m3u8\n"
            ),
            "{text}"
        );
        assert!(text.contains("URI=\"media_2.m3u8\""));
        assert_eq!(parse_master(&text).variants.len(), 2);
    }

    #[test]
    fn media_playlists_lose_dates_and_list_their_segments() {
        let text = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init-stream0.m4s\"\n\
#EXTINF:3.840000,\n#EXT-X-PROGRAM-DATE-TIME:2026-12-03T17:14:46.000+0000\nchunk-stream0-00001.m4s\n\
#EXTINF:1.440000,\nchunk-stream0-00002.m4s\n#EXT-X-ENDLIST\n";
        let (clean, segs) = clean_media_playlist(text);
        assert!(!clean.contains("PROGRAM-DATE-TIME"));
        assert!(clean.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        assert_eq!(
            segs,
            [
                ("chunk-stream0-00001.m4s".to_string(), 3.84),
                ("chunk-stream0-00002.m4s".to_string(), 1.44)
            ]
        );
    }

    #[test]
    fn rates_and_mpd_patches() {
        // 1 Mbit/s for 4 s, 2 Mbit/s for 2 s, a 0.2 s tail at 10 Mbit/s (not a peak).
        let r = segment_rates(&[(500_000, 4.0), (500_000, 2.0), (250_000, 0.2)]);
        assert_eq!(r.peak_bps, 2_000_000);
        assert_eq!(r.average_bps, (1_250_000.0 * 8.0 / 6.2f64).ceil() as u64);
        let mpd =
            "<Representation id=\"0\" mimeType=\"video/mp4\" bandwidth=\"535401\" width=\"640\">\
<Representation id=\"1\" bandwidth=\"212760\">";
        let patched = patch_mpd_bandwidth(mpd, &[(1, 99), (0, 1234)]);
        assert_eq!(
            patched,
            "<Representation id=\"0\" mimeType=\"video/mp4\" bandwidth=\"1234\" width=\"640\">\
<Representation id=\"1\" bandwidth=\"99\">"
        );
        assert_eq!(stream_of("media_12.m3u8"), Some(12));
        assert_eq!(
            attributes("A=1,B=\"x,y\""),
            [("A".into(), "1".into()), ("B".into(), "\"x,y\"".into())]
        );
    }
}
