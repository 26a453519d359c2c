//! A host's GPUs: a job placed on one, a device fault that backs that GPU off while the job
//! finishes on the CPU, the probe's one line about them; and on a GPU machine, the probe's NVML
//! figures and NVDEC codecs and a decode on the GPU the job records.

mod common;

use std::process::Command;
use std::sync::atomic::AtomicBool;

use common::{ffprobe, media};
use kiln_gpu_node::host::{self, Engine, GpuSelection, HealthPolicy, HostGpus};
use kiln_gpu_node::media as kiln_media;
use kiln_protocol::{GpuHealth, GpuInfo, NodeCommand, Resolution, VideoCodec, VideoParams};

fn small_h264() -> VideoParams {
    VideoParams {
        resolution: Resolution::parse("320").unwrap(),
        ..VideoParams::crf(VideoCodec::H264, 30)
    }
}

/// Transcode bikes.mp4 (250 frames) with `placement` as the job's.
fn transcode_on(placement: host::Placement, out: &std::path::Path) -> kiln_media::TranscodeOutcome {
    host::scope::with(Some(placement), || {
        kiln_media::transcode(
            &media("video/bikes.mp4"),
            out,
            &small_h264(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
    })
    .expect("the job completes")
}

/// The forced device error: a GPU index CUDA cannot open (there is no GPU 57 on any
/// machine this runs on, with or without a driver). The fault is the device's, so the GPU
/// backs off, and the job completes on the CPU path.
#[test]
fn a_device_fault_backs_the_gpu_off_and_the_job_completes_on_the_cpu() {
    let unreachable = GpuInfo {
        index: 57,
        name: "unreachable".into(),
        cuda: true,
        decoders: vec!["h264_cuvid".into()],
        ..Default::default()
    };
    let gpus = HostGpus::new(vec![unreachable], 3, HealthPolicy::default());
    let job = gpus.place_job(&[Engine::Decode]);
    let placement = job.placement();
    assert_eq!(placement.gpu, Some(57));
    assert_eq!(gpus.states()[0].jobs, 1);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bikes.mp4");
    let done = transcode_on(placement, &out);
    assert_eq!(done.frames, 250);
    assert_eq!(
        (done.report.hwaccel.as_deref(), done.report.gpu),
        (None, None)
    );
    let why = done.report.hardware_fallback.clone().unwrap_or_default();
    assert!(
        why.contains("GPU fault") && why.contains("57"),
        "the job says why it ran on the CPU: {why:?}"
    );
    let streams = ffprobe(&out);
    assert_eq!(
        (
            streams[0].codec.as_str(),
            streams[0].width,
            streams[0].nb_frames
        ),
        ("h264", 320, 250)
    );

    // The GPU backs off; the job was moved off it (nowhere else: the CPU).
    let s = &gpus.states()[0];
    assert_eq!((s.health, s.faults, s.jobs), (GpuHealth::BackingOff, 1, 0));
    assert!(s.until_ms.is_some() && s.reason.as_deref().unwrap_or("").contains("57"));
    assert_eq!(job.gpu(), None);
    assert!(gpus.place(&[Engine::Decode], &[]).is_none());
    drop(job);

    // Repeated faults take it out until an operator enables it.
    gpus.fault(57, "again");
    gpus.fault(57, "and again");
    assert_eq!(gpus.states()[0].health, GpuHealth::Disabled);
    gpus.refresh();
    assert_eq!(gpus.states()[0].health, GpuHealth::Disabled);
    assert!(gpus.command(&NodeCommand::EnableGpu { gpu: 57 }));
    assert_eq!(gpus.states()[0].health, GpuHealth::Healthy);
    assert_eq!(
        gpus.place(&[Engine::Decode], &[]).map(|p| p.index()),
        Some(57)
    );
}

/// What `kiln-gpu-node probe` prints, and its log lines.
fn probe_node(env: &[(&str, &str)]) -> (serde_json::Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-gpu-node"));
    cmd.arg("probe")
        .env_remove("KILN_GPUS")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kiln-gpu-node probe");
    assert!(out.status.success(), "{out:?}");
    (
        serde_json::from_slice(&out.stdout).expect("probe JSON"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines_with(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// A node says once what GPUs it drives, or once why none.
#[test]
fn the_probe_says_once_which_gpus_it_drives_or_why_none() {
    let (json, log) = probe_node(&[]);
    let listed = json["node"]["gpus"].as_array().expect("gpus").len();
    if listed == 0 {
        // This machine: no NVIDIA driver (CI), so NVML cannot be opened.
        assert_eq!(lines_with(&log, "no GPU"), 1, "{log}");
        assert_eq!(lines_with(&log, "GPUs driven by this node"), 0, "{log}");
        assert_eq!(json["node"]["cuda"], false);
    } else {
        assert_eq!(lines_with(&log, "GPUs driven by this node"), 1, "{log}");
        assert_eq!(lines_with(&log, "no GPU"), 0, "{log}");
        assert_eq!(json["gpus"].as_array().unwrap().len(), listed);
    }
    // KILN_GPUS=none: no GPU, whatever the host has, and no NVENC class.
    let (json, log) = probe_node(&[("KILN_GPUS", "none")]);
    assert_eq!(json["node"]["gpus"].as_array().unwrap().len(), 0);
    assert_eq!(lines_with(&log, "no GPU"), 1, "{log}");
    assert!(log.contains("KILN_GPUS=none"), "{log}");
    let classes = json["classes"].as_array().unwrap();
    assert!(classes
        .iter()
        .all(|c| !c.as_str().unwrap().ends_with(":nvenc")));
    assert!(classes.iter().any(|c| c == "h264:cpu"), "{classes:?}");
}

#[test]
#[ignore = "needs GPU"]
fn the_probe_lists_each_gpu_with_nvml_figures_and_its_nvdec_codecs() {
    let found = host::probe(&GpuSelection::All);
    eprintln!("{:#?}", found.gpus);
    assert!(found.none_because.is_none(), "{:?}", found.none_because);
    let g = &found.gpus[0];
    assert!(g.uuid.starts_with("GPU-"), "{g:?}");
    assert!(!g.pci_bus_id.is_empty() && g.memory_mib > 1024, "{g:?}");
    assert!(g.cuda, "{g:?}");
    assert!(g.decoders.iter().any(|d| d == "h264_cuvid"), "{g:?}");
    assert!(g.engines.nvdec >= 1, "{g:?}");
    // KILN_GPUS picks by index or UUID.
    for pick in [g.index.to_string(), g.uuid.clone()] {
        let only = host::probe(&GpuSelection::Only(vec![pick.clone()]));
        assert_eq!(only.gpus.len(), 1, "{pick}");
    }
    assert!(host::probe(&GpuSelection::None).gpus.is_empty());
    let gpus = HostGpus::new(found.gpus.clone(), 3, HealthPolicy::default());
    gpus.refresh();
    let s = &gpus.states()[0];
    eprintln!("{s:?}");
    assert!(s.utilisation.iter().any(|u| u.engine == "decoder"), "{s:?}");
    assert!(s.memory_used_mib > 0, "{s:?}");
}

#[test]
#[ignore = "needs GPU"]
fn a_job_decodes_on_its_gpu_and_records_which() {
    let gpus = HostGpus::new(
        host::probe(&GpuSelection::All).gpus,
        3,
        HealthPolicy::default(),
    );
    let job = gpus.place_job(&[Engine::Decode]);
    let placement = job.placement();
    let gpu = placement.gpu.expect("placed on a GPU");
    let dir = tempfile::tempdir().unwrap();
    let done = transcode_on(placement, &dir.path().join("bikes.mp4"));
    eprintln!("{:?}", done.report);
    assert_eq!(done.report.hwaccel.as_deref(), Some("cuda"));
    assert_eq!(done.report.gpu, Some(gpu));
    assert_eq!(done.frames, 250);
    let s = gpus.states().into_iter().find(|s| s.index == gpu).unwrap();
    assert_eq!((s.health, s.faults, s.jobs), (GpuHealth::Healthy, 0, 1));
}
