//! A libavfilter graph with one source and one sink or several: the video chain (scale,
//! rotate, pixel format; `scale_cuda` when frames are on the GPU), a ladder's `split` into
//! every rendition's chain, and the audio chain (resample, channel layout, fixed-size frames
//! for the encoder). Raw FFmpeg calls in one small owner, because
//! rsmpeg's graph API ties filter contexts to borrow lifetimes a pipeline cannot hold.

use std::ffi::CString;
use std::ptr;

use rsmpeg::avutil::AVFrame;
use rsmpeg::ffi;

use super::av_error_text;

pub(crate) struct FilterGraph {
    graph: *mut ffi::AVFilterGraph,
    src: *mut ffi::AVFilterContext,
    /// The sinks, in the order of the chain's `out0`, `out1`, … pads (one: `out`).
    sinks: Vec<*mut ffi::AVFilterContext>,
}

// SAFETY: the graph is owned by one pipeline and used from one thread at a time.
unsafe impl Send for FilterGraph {}

/// What pulling from the sink gave.
pub(crate) enum Pulled {
    Frame(AVFrame),
    /// Needs more input.
    Again,
    /// Flushed: nothing more will come.
    End,
}

fn check(rc: i32, what: &str) -> Result<i32, String> {
    if rc < 0 {
        Err(format!("{what}: {}", av_error_text(rc)))
    } else {
        Ok(rc)
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("filter strings have no NUL")
}

impl FilterGraph {
    fn alloc() -> Result<Self, String> {
        // SAFETY: plain allocation; checked for NULL.
        let graph = unsafe { ffi::avfilter_graph_alloc() };
        if graph.is_null() {
            return Err("cannot allocate a filter graph".into());
        }
        Ok(Self {
            graph,
            src: ptr::null_mut(),
            sinks: Vec::new(),
        })
    }

    /// A video graph fed frames like `first` (size, pixel format, hardware frames context)
    /// in `time_base`, running `chain`.
    pub fn video(
        first: &AVFrame,
        time_base: ffi::AVRational,
        frame_rate: Option<ffi::AVRational>,
        chain: &str,
    ) -> Result<Self, String> {
        Self::video_to(first, time_base, frame_rate, chain, 1)
    }

    /// A video graph like [`FilterGraph::video`] whose `chain` ends in `sinks` open outputs
    /// labelled `[out0]`, `[out1]`, … (a ladder: `[in]split=3[a][b][c];[a]scale…[out0];…`);
    /// [`FilterGraph::pull_from`] takes each one's frames.
    pub fn video_to(
        first: &AVFrame,
        time_base: ffi::AVRational,
        frame_rate: Option<ffi::AVRational>,
        chain: &str,
        sinks: usize,
    ) -> Result<Self, String> {
        let mut g = Self::alloc()?;
        // SAFETY: `g.graph` is a live graph from `alloc`; each pointer FFmpeg returns is checked
        // for NULL before use, the parameters are freed after `av_buffersrc_parameters_set` copied
        // them, and `first` outlives the calls.
        unsafe {
            let buffer = ffi::avfilter_get_by_name(c"buffer".as_ptr());
            g.src = ffi::avfilter_graph_alloc_filter(g.graph, buffer, c"in".as_ptr());
            if g.src.is_null() {
                return Err("cannot allocate the buffer source".into());
            }
            let par = ffi::av_buffersrc_parameters_alloc();
            if par.is_null() {
                return Err("cannot allocate buffer source parameters".into());
            }
            (*par).format = first.format;
            (*par).width = first.width;
            (*par).height = first.height;
            (*par).time_base = time_base;
            (*par).sample_aspect_ratio = if first.sample_aspect_ratio.num > 0 {
                first.sample_aspect_ratio
            } else {
                ffi::AVRational { num: 1, den: 1 }
            };
            if let Some(fr) = frame_rate {
                (*par).frame_rate = fr;
            }
            // The source keeps its own reference to the frames context.
            (*par).hw_frames_ctx = first.hw_frames_ctx;
            let rc = ffi::av_buffersrc_parameters_set(g.src, par);
            ffi::av_free(par as *mut _);
            check(rc, "buffer source parameters")?;
            check(
                ffi::avfilter_init_str(g.src, ptr::null()),
                "buffer source init",
            )?;
        }
        g.finish("buffersink", chain, sinks)?;
        Ok(g)
    }

    /// An audio graph fed frames described by `src_args` (abuffer's options), running `chain`,
    /// handing out frames of exactly `frame_size` samples when given (what AAC and Opus need).
    pub fn audio(src_args: &str, chain: &str, frame_size: Option<u32>) -> Result<Self, String> {
        let mut g = Self::alloc()?;
        // SAFETY: `g.graph` is a live graph from `alloc`; `args` is a NUL-terminated string that
        // outlives the call, and the filter is owned by the graph.
        unsafe {
            let abuffer = ffi::avfilter_get_by_name(c"abuffer".as_ptr());
            let args = cstr(src_args);
            check(
                ffi::avfilter_graph_create_filter(
                    &mut g.src,
                    abuffer,
                    c"in".as_ptr(),
                    args.as_ptr(),
                    ptr::null_mut(),
                    g.graph,
                ),
                "audio buffer source",
            )?;
        }
        g.finish("abuffersink", chain, 1)?;
        if let Some(n) = frame_size.filter(|n| *n > 0) {
            // SAFETY: `g.sinks[0]` is the abuffersink `finish` just created in this graph.
            unsafe { ffi::av_buffersink_set_frame_size(g.sinks[0], n) };
        }
        Ok(g)
    }

    fn finish(&mut self, sink_name: &str, chain: &str, sinks: usize) -> Result<(), String> {
        // SAFETY: `self.graph` and `self.src` are live (from `alloc` and the source set-up); the
        // in/out pads are checked for NULL, handed to avfilter_graph_parse_ptr, and freed by it or
        // here; every string passed is NUL-terminated and outlives its call.
        unsafe {
            let filter = ffi::avfilter_get_by_name(cstr(sink_name).as_ptr());
            let mut inputs: *mut ffi::AVFilterInOut = ptr::null_mut();
            // Built back to front, so the list runs out0, out1, … .
            for i in (0..sinks.max(1)).rev() {
                let name = if sinks <= 1 {
                    "out".to_string()
                } else {
                    format!("out{i}")
                };
                let mut sink = ptr::null_mut();
                let rc = ffi::avfilter_graph_create_filter(
                    &mut sink,
                    filter,
                    cstr(&name).as_ptr(),
                    ptr::null(),
                    ptr::null_mut(),
                    self.graph,
                );
                if rc < 0 {
                    ffi::avfilter_inout_free(&mut inputs);
                    check(rc, "buffer sink")?;
                }
                self.sinks.insert(0, sink);
                let pad = ffi::avfilter_inout_alloc();
                if pad.is_null() {
                    ffi::avfilter_inout_free(&mut inputs);
                    return Err("cannot allocate filter pads".into());
                }
                (*pad).name = ffi::av_strdup(cstr(&name).as_ptr());
                (*pad).filter_ctx = sink;
                (*pad).pad_idx = 0;
                (*pad).next = inputs;
                inputs = pad;
            }
            // The chain's open input connects to our source, its open outputs to our sinks.
            let mut outputs = ffi::avfilter_inout_alloc();
            if outputs.is_null() {
                ffi::avfilter_inout_free(&mut inputs);
                return Err("cannot allocate filter pads".into());
            }
            (*outputs).name = ffi::av_strdup(c"in".as_ptr());
            (*outputs).filter_ctx = self.src;
            (*outputs).pad_idx = 0;
            (*outputs).next = ptr::null_mut();
            let spec = cstr(chain);
            let rc = ffi::avfilter_graph_parse_ptr(
                self.graph,
                spec.as_ptr(),
                &mut inputs,
                &mut outputs,
                ptr::null_mut(),
            );
            ffi::avfilter_inout_free(&mut inputs);
            ffi::avfilter_inout_free(&mut outputs);
            check(rc, &format!("filter chain {chain:?}"))?;
            check(
                ffi::avfilter_graph_config(self.graph, ptr::null_mut()),
                &format!("configure filter chain {chain:?}"),
            )?;
        }
        Ok(())
    }

    /// Feed a frame, or `None` to flush.
    pub fn push(&mut self, frame: Option<&mut AVFrame>) -> Result<(), String> {
        let f = frame.map(|f| f.as_mut_ptr()).unwrap_or(ptr::null_mut());
        // KEEP_REF: the caller still owns its frame.
        // SAFETY: `self.src` is this graph's buffer source; `f` is NULL (flush) or a live frame the
        // caller keeps (KEEP_REF makes FFmpeg take its own reference).
        let rc = unsafe {
            ffi::av_buffersrc_add_frame_flags(self.src, f, ffi::AV_BUFFERSRC_FLAG_KEEP_REF as i32)
        };
        check(rc, "filter input").map(|_| ())
    }

    /// Take the next filtered frame.
    pub fn pull(&mut self) -> Result<Pulled, String> {
        self.pull_from(0)
    }

    /// Take the next filtered frame of sink `i`.
    pub fn pull_from(&mut self, i: usize) -> Result<Pulled, String> {
        let mut out = AVFrame::new();
        // SAFETY: `self.sinks[i]` is one of this graph's buffer sinks and `out` a freshly
        // allocated frame it may fill.
        let rc = unsafe { ffi::av_buffersink_get_frame(self.sinks[i], out.as_mut_ptr()) };
        if rc == ffi::AVERROR(ffi::EAGAIN) {
            Ok(Pulled::Again)
        } else if rc == ffi::AVERROR_EOF {
            Ok(Pulled::End)
        } else {
            check(rc, "filter output")?;
            Ok(Pulled::Frame(out))
        }
    }

    /// The time base of the frames the sink hands out.
    pub fn sink_time_base(&self) -> ffi::AVRational {
        // SAFETY: `self.sinks[0]` is this configured graph's first buffer sink.
        unsafe { ffi::av_buffersink_get_time_base(self.sinks[0]) }
    }
}

impl Drop for FilterGraph {
    fn drop(&mut self) {
        // Frees every filter in it, source and sink included.
        // SAFETY: `self.graph` was allocated by `alloc` and is freed once, here; nothing else holds
        // its filters.
        unsafe { ffi::avfilter_graph_free(&mut self.graph) };
    }
}
