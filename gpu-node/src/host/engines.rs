//! How many NVENC, NVDEC and NVJPG engines a GPU has. NVML states it only for MIG-capable
//! cards (the full GPU-instance profile); for the rest, NVIDIA's published counts by model,
//! and failing those, at least one of each engine a codec opened on.

use kiln_protocol::GpuEngines;

/// Published engine counts (NVIDIA's video encode/decode support matrix), by a token of the
/// model name: (token, NVENC, NVDEC, NVJPG).
const MODELS: &[(&str, u32, u32, u32)] = &[
    ("H100", 0, 7, 7),
    ("H200", 0, 7, 7),
    ("GH200", 0, 7, 7),
    ("A100", 0, 5, 1),
    ("A30", 0, 4, 1),
    ("L40", 3, 3, 4),
    ("L40S", 3, 3, 4),
    ("L4", 2, 4, 4),
    ("A40", 1, 2, 0),
    ("A10", 1, 2, 0),
    ("A10G", 1, 2, 0),
    ("A16", 4, 8, 0),
    ("A2", 1, 2, 0),
    ("T4", 1, 2, 0),
];

/// The counts for `model` from the table, when a token of its name is there.
pub fn by_model(model: &str) -> Option<GpuEngines> {
    model
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find_map(|token| MODELS.iter().find(|m| m.0 == token))
        .map(|&(_, nvenc, nvdec, nvjpg)| GpuEngines {
            nvenc,
            nvdec,
            nvjpg,
            source: "model".into(),
        })
}

/// The counts to report: NVML's when it gave them, else the model's, else one of each engine
/// a codec opened on (`encoders`/`decoders` opened on the device).
pub fn counts(
    nvml: Option<(u32, u32, u32)>,
    model: &str,
    encoders_opened: bool,
    decoders_opened: bool,
) -> GpuEngines {
    if let Some((nvenc, nvdec, nvjpg)) = nvml {
        return GpuEngines {
            nvenc,
            nvdec,
            nvjpg,
            source: "nvml".into(),
        };
    }
    by_model(model).unwrap_or_else(|| GpuEngines {
        nvenc: encoders_opened as u32,
        nvdec: decoders_opened as u32,
        nvjpg: 0,
        source: "opened".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_source() {
        let e = |n, d, j, s: &str| GpuEngines {
            nvenc: n,
            nvdec: d,
            nvjpg: j,
            source: s.into(),
        };
        // (NVML's counts, model, NVENC opened, NVDEC opened, result)
        let cases = [
            (
                Some((0, 7, 7)),
                "NVIDIA H100 80GB HBM3",
                false,
                true,
                e(0, 7, 7, "nvml"),
            ),
            (
                None,
                "NVIDIA H100 80GB HBM3",
                false,
                true,
                e(0, 7, 7, "model"),
            ),
            (None, "NVIDIA H200", false, true, e(0, 7, 7, "model")),
            (
                None,
                "NVIDIA A100-SXM4-80GB",
                false,
                true,
                e(0, 5, 1, "model"),
            ),
            // L4 and L40S are different cards; A10 is not A100.
            (None, "NVIDIA L4", true, true, e(2, 4, 4, "model")),
            (None, "NVIDIA L40S", true, true, e(3, 3, 4, "model")),
            (None, "NVIDIA A10", true, true, e(1, 2, 0, "model")),
            (None, "Tesla T4", true, true, e(1, 2, 0, "model")),
            // Not in the table: what opened.
            (
                None,
                "NVIDIA GeForce RTX 4090",
                true,
                true,
                e(1, 1, 0, "opened"),
            ),
            (None, "NVIDIA Future X9", false, true, e(0, 1, 0, "opened")),
        ];
        for (nvml, model, enc, dec, want) in cases {
            assert_eq!(counts(nvml, model, enc, dec), want, "{model}");
        }
    }
}
