//! db-sync as a child process: a run to completion, a run in the background ([`Capture`]),
//! and the journal read back through the library.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use db_sync::journal::{self, event};
use serde_json::Value;

use super::pg::{pg_password, Pipeline, COUNTER};
use super::BIN;

pub fn run_db_sync(cwd: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run db-sync")
}

pub fn read_journal(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    journal::read_events(dir, 0, |e| {
        out.push(event::to_json(e.seq, e.schema, e.body).expect("event decodes"));
        Ok(true)
    })
    .expect("journal reads");
    out
}

/// A running `db-sync capture`.
pub struct Capture {
    pub child: Child,
    pub log_path: PathBuf,
}

impl Capture {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then the exit code (panics if it does not exit within `timeout`).
    pub fn terminate(mut self, timeout: Duration) -> i32 {
        signal(&self.child, libc_sigterm());
        self.wait(timeout)
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "db-sync did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn libc_sigterm() -> &'static str {
    "TERM"
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} failed");
}

/// The last non-empty line of a process's stderr: the one-line error.
pub fn last_stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

impl Pipeline {
    /// Like [`Pipeline::start_capture`], with `extra` YAML appended to the config (an `audit:`
    /// section, say); later [`Pipeline::db_sync`] calls read the same config.
    pub fn start_capture_with(&self, extra: &str) -> Capture {
        self.write_config_with(&pg_password(), self.port, extra);
        self.spawn_db_sync(&["capture"])
    }

    /// Starts a db-sync command in the background with the config as written; its stderr goes
    /// to a log file.
    pub fn spawn_db_sync(&self, args: &[&str]) -> Capture {
        self.spawn_db_sync_in(self.dir.path(), args)
    }

    /// [`Pipeline::spawn_db_sync`] from working directory `cwd`.
    pub fn spawn_db_sync_in(&self, cwd: &Path, args: &[&str]) -> Capture {
        self.spawn(cwd, args, &[])
    }

    /// [`Pipeline::spawn_db_sync`] with extra environment variables (a failpoint, a pause).
    pub fn spawn_db_sync_env(&self, args: &[&str], env: &[(&str, &str)]) -> Capture {
        self.spawn(self.dir.path(), args, env)
    }

    fn spawn(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Capture {
        let log_path = self.dir.path().join(format!(
            "db-sync-{}.log",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .envs(env.iter().copied())
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn db-sync");
        Capture { child, log_path }
    }

    /// Runs a db-sync command to completion with extra environment variables.
    pub fn db_sync_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .expect("run db-sync")
    }
}
