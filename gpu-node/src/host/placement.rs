//! Which GPU of the host takes a job, as pure arithmetic over each GPU's load: least load on
//! the engines the job needs, among the healthy GPUs that have them and room for it.

/// A media engine a job uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// NVDEC decode (with `scale_cuda` on the same device).
    Decode,
    /// An NVENC session.
    Encode,
    /// The wgpu resize shader on the GPU's adapter.
    Image,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decoder",
            Self::Encode => "encoder",
            Self::Image => "gpu",
        }
    }
}

/// One GPU as placement sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuLoad {
    pub index: u32,
    /// Healthy and selected.
    pub usable: bool,
    /// NVDEC through FFmpeg's CUDA hwaccel opened on it.
    pub decode: bool,
    /// NVENC engines (0: none, or none opened).
    pub nvenc_engines: u32,
    /// NVDEC engines (at least 1 where `decode`).
    pub nvdec_engines: u32,
    /// A wgpu adapter matched to it.
    pub image: bool,
    /// NVENC sessions Kiln holds on it, and its limit.
    pub nvenc_sessions: u32,
    pub nvenc_limit: u32,
    /// Kiln jobs on it now, and the most it takes (0: no limit).
    pub jobs: u32,
    pub max_jobs: u32,
    /// NVML utilisation, percent (0 where NVML gave none).
    pub decoder_util: u32,
    pub encoder_util: u32,
    pub gpu_util: u32,
    /// Memory free on the card, MiB (`None`: unknown).
    pub memory_free_mib: Option<u64>,
}

/// A GPU with less free memory than this takes no new job (the decoder's surfaces and the
/// encoder's frames need room: "no decoder surfaces left" is how a full card fails).
pub const MIN_FREE_MIB: u64 = 512;

impl GpuLoad {
    /// Whether the GPU can take a job that needs `engine`.
    fn has(&self, engine: Engine) -> bool {
        match engine {
            Engine::Decode => self.decode,
            Engine::Encode => self.nvenc_engines > 0 && self.nvenc_sessions < self.nvenc_limit,
            Engine::Image => self.image,
        }
    }

    /// Its load on `engine`, in percent-like units: NVML's utilisation plus Kiln's own work on
    /// it per engine (NVML samples lag a burst of placements by a second; the counts do not).
    fn load(&self, engine: Engine) -> f64 {
        match engine {
            Engine::Decode => {
                self.decoder_util as f64
                    + 100.0 * self.jobs as f64 / self.nvdec_engines.max(1) as f64
            }
            Engine::Encode => {
                self.encoder_util as f64
                    + 100.0 * self.nvenc_sessions as f64 / self.nvenc_engines.max(1) as f64
            }
            Engine::Image => self.gpu_util as f64 + 100.0 * self.jobs as f64,
        }
    }
}

/// The GPU for a job that needs every engine of `needs`, least loaded first (ties to the lower
/// index), skipping `avoid` (GPUs the job already faulted on); `None` when none can take it.
pub fn pick(gpus: &[GpuLoad], needs: &[Engine], avoid: &[u32]) -> Option<u32> {
    gpus.iter()
        .filter(|g| g.usable && !avoid.contains(&g.index))
        .filter(|g| g.max_jobs == 0 || g.jobs < g.max_jobs)
        .filter(|g| g.memory_free_mib.is_none_or(|m| m >= MIN_FREE_MIB))
        .filter(|g| needs.iter().all(|e| g.has(*e)))
        .map(|g| (needs.iter().map(|e| g.load(*e)).sum::<f64>(), g.index))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Engine::*;

    /// An H100-like GPU (NVDEC, no NVENC) or an L4-like one (both), idle.
    fn gpu(index: u32, nvenc: u32) -> GpuLoad {
        GpuLoad {
            index,
            usable: true,
            decode: true,
            nvenc_engines: nvenc,
            nvdec_engines: 4,
            image: true,
            nvenc_limit: if nvenc > 0 { 3 } else { 0 },
            memory_free_mib: Some(20_000),
            ..Default::default()
        }
    }

    /// (GPUs, engines needed, GPUs to avoid, the one chosen)
    type Case = (Vec<GpuLoad>, Vec<Engine>, Vec<u32>, Option<u32>);

    #[test]
    fn least_loaded_gpu_with_the_engines() {
        let busy_dec = GpuLoad {
            decoder_util: 80,
            ..gpu(0, 2)
        };
        let two_jobs = GpuLoad {
            jobs: 8,
            ..gpu(1, 2)
        };
        let full_sessions = GpuLoad {
            nvenc_sessions: 3,
            ..gpu(1, 2)
        };
        let sick = GpuLoad {
            usable: false,
            ..gpu(0, 2)
        };
        let full_memory = GpuLoad {
            memory_free_mib: Some(100),
            ..gpu(0, 2)
        };
        let one_session = GpuLoad {
            nvenc_sessions: 1,
            ..gpu(0, 1)
        };
        let one_of_two = GpuLoad {
            nvenc_sessions: 1,
            ..gpu(1, 2)
        };
        let cases: Vec<Case> = vec![
            (vec![], vec![Decode], vec![], None),
            (vec![gpu(0, 0), gpu(1, 0)], vec![Decode], vec![], Some(0)),
            // Decoder load from NVML moves it.
            (
                vec![busy_dec.clone(), gpu(1, 2)],
                vec![Decode],
                vec![],
                Some(1),
            ),
            // Kiln's own jobs count before NVML sees them.
            (
                vec![gpu(0, 0), two_jobs.clone()],
                vec![Decode],
                vec![],
                Some(0),
            ),
            // No NVENC on an H100: an encode goes to the card that has it.
            (vec![gpu(0, 0), gpu(1, 2)], vec![Encode], vec![], Some(1)),
            (vec![gpu(0, 0)], vec![Decode, Encode], vec![], None),
            // Sessions counted per GPU: a full card takes none.
            (vec![full_sessions.clone()], vec![Encode], vec![], None),
            (
                vec![gpu(0, 2), full_sessions.clone()],
                vec![Encode],
                vec![],
                Some(0),
            ),
            // Sessions per engine: one of two engines busy beats one of one.
            (vec![one_session, one_of_two], vec![Encode], vec![], Some(1)),
            // Unhealthy, avoided or full of memory: skipped.
            (vec![sick, gpu(1, 0)], vec![Decode], vec![], Some(1)),
            (vec![gpu(0, 0), gpu(1, 0)], vec![Decode], vec![0], Some(1)),
            (vec![gpu(0, 0)], vec![Decode], vec![0], None),
            (vec![full_memory, gpu(1, 0)], vec![Decode], vec![], Some(1)),
            // A GPU at its job limit takes no more.
            (
                vec![
                    GpuLoad {
                        max_jobs: 8,
                        ..two_jobs.clone()
                    },
                    GpuLoad {
                        max_jobs: 8,
                        decoder_util: 100,
                        ..gpu(0, 0)
                    },
                ],
                vec![Decode],
                vec![],
                Some(0),
            ),
            // Images go where fewer jobs are.
            (vec![two_jobs, gpu(0, 0)], vec![Image], vec![], Some(0)),
            (
                vec![GpuLoad {
                    image: false,
                    ..gpu(0, 0)
                }],
                vec![Image],
                vec![],
                None,
            ),
        ];
        for (gpus, needs, avoid, want) in cases {
            assert_eq!(
                pick(&gpus, &needs, &avoid),
                want,
                "{needs:?} avoiding {avoid:?} on {gpus:#?}"
            );
        }
    }
}
