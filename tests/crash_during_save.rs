//! Issue 18: kill -9 of one rank during a distributed save, 10 trials. Each time the job dies,
//! the newest complete checkpoint loads, and a run resumed from it gives the uninterrupted run's
//! losses bit for bit. Most kills must land inside a save (its temporary directory, holding rank
//! files, is what the killed job leaves behind), else the test proves nothing.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Llama of ~1.1 M parameters: a save writes 13 MB, long enough to be caught in the act.
const CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1024,
  "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4,
  "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
  "tie_word_embeddings": false
}"#;

const STEPS: u64 = 6;

fn args(config: &Path, out: &Path, ckpt: &Path, steps: u64) -> Vec<String> {
    let recipe = root().join("tests/recipes/tiny-init.toml");
    train_args(
        &recipe.display().to_string(),
        &[
            format!("model.config={}", config.display()),
            format!("train.out_dir={}", out.display()),
            format!("checkpoint.dir={}", ckpt.display()),
            format!("train.steps={steps}"),
            "checkpoint.every=1".into(),
            "checkpoint.keep_last=2".into(),
            "parallel.zero_stage=3".into(),
        ],
    )
}

fn spawn_mpirun(n: usize, args: &[String]) -> Child {
    Command::new("mpirun")
        .args([
            "-np",
            &n.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .arg(bin())
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mpirun starts")
}

/// The pid of MPI rank `rank` among the processes started by mpirun `parent`.
fn rank_pid(parent: u32, rank: usize) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (after the parenthesised command name) is the parent pid.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let want = format!("OMPI_COMM_WORLD_RANK={rank}");
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Waits until `dir` holds a rank file being written (a save in progress), or the job ends.
fn wait_for_save(job: &mut Child, dir: &Path) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        if job.try_wait().unwrap().is_some() {
            return false;
        }
        let writing = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
            })
            .unwrap_or(false);
        if writing {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

#[test]
fn killing_a_rank_during_a_save_keeps_the_previous_step_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, CONFIG).unwrap();
    // The uninterrupted run.
    let full = tmp.path().join("full");
    check(
        &mpirun(2, &strs(&args(&config, &full, &full.join("ck"), STEPS))),
        "uninterrupted run",
    );
    let want = losses(&full);
    assert_eq!(want.len(), STEPS as usize);

    let mut mid_save = 0;
    for trial in 0..10u64 {
        let dir = tmp.path().join(format!("trial{trial}"));
        let ckpt = dir.join("ck");
        // Kill during the save of step 2..=4, rank 0 or 1.
        let (at, victim) = (2 + trial % 3, (trial % 2) as usize);
        let mut job = spawn_mpirun(2, &args(&config, &dir, &ckpt, STEPS));
        let saving = ckpt.join(format!(".tmp-step-{at:08}"));
        assert!(
            wait_for_save(&mut job, &saving),
            "trial {trial}: the save of step {at} never started"
        );
        let pid = rank_pid(job.id(), victim).expect("the rank's process");
        // SAFETY: sending SIGKILL to a child process of our own job.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let status = job.wait().unwrap();
        assert!(
            !status.success(),
            "trial {trial}: the job survived its rank"
        );
        let latest: Option<PathBuf> = ferrotron::checkpoint::latest(&ckpt).unwrap();
        let latest = latest.expect("an earlier checkpoint exists");
        let step = ferrotron::checkpoint::load::read_step(&latest).unwrap();
        if saving.exists() {
            mid_save += 1;
            assert_eq!(
                step,
                at - 1,
                "trial {trial}: the interrupted step is not published"
            );
        }
        // The newest checkpoint loads whole...
        let cfg = ferrotron::model::ModelConfig::from_file(&latest.join("config.json")).unwrap();
        let layout = ferrotron::model::ParamLayout::new(&cfg);
        ferrotron::checkpoint::load(&latest, &cfg, &layout).unwrap();
        // ...and resumes to the uninterrupted run's losses, bit for bit (the same total steps:
        // the learning-rate schedule depends on it).
        let resumed = dir.join("resumed");
        let mut a = args(&config, &resumed, &ckpt, STEPS);
        a.push("--resume".into());
        check(&mpirun(2, &strs(&a)), &format!("trial {trial}: resume"));
        let got = losses(&resumed);
        let expect = &want[step as usize..];
        assert_eq!(got.len(), expect.len(), "trial {trial}");
        assert!(
            got.iter()
                .zip(expect)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "trial {trial}: resumed from step {step}: {got:?} vs {expect:?}"
        );
        println!("trial {trial}: killed rank {victim} while saving step {at}; resumed from step {step} exactly");
    }
    println!("{mid_save} of 10 kills landed inside a save");
    assert!(
        mid_save >= 7,
        "only {mid_save} of 10 kills landed inside a save"
    );
}
