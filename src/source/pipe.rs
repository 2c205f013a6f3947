//! The `exec:` source: a command that writes an MJPEG stream to its stdout, such
//! as `rpicam-vid -t 0 --codec mjpeg -o -` for a Raspberry Pi CSI camera (which
//! current Raspberry Pi OS drives through libcamera, not plain V4L2), or ffmpeg
//! converting a camera kindercam cannot read itself.
//!
//! The command runs under `/bin/sh` in its own process group, so that a pipeline
//! is stopped as a whole. Its output is cut into frames at the JPEG markers
//! (`mjpeg::Splitter`); each frame due is checked and given Huffman tables if it
//! lacks them, broken ones are dropped and counted. The last lines of its stderr
//! become the offline reason when it dies, and the supervisor restarts it. It is
//! sent SIGTERM (then SIGKILL) when nobody watches, when kindercam stops, and
//! when it produces no usable frame for too long; if kindercam itself is killed,
//! the kernel kills the child (`PR_SET_PDEATHSIG`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hub::Stream;
use crate::intake::Intake;
use crate::mjpeg::{self, Splitter};
use crate::source::supervisor::{signal_group, terminate_group, Control, Pacer, SourceError};
use crate::sync::Locked;

/// Bytes read from the child at once.
const READ_CHUNK: usize = 64 * 1024;
/// A child that sends bytes but no usable frame for this long is restarted.
const NO_FRAME_LIMIT: Duration = Duration::from_secs(8);
/// How long a child gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(800);
/// Lines of the child's stderr kept for the offline reason, and their length.
const STDERR_LINES: usize = 3;
const STDERR_LINE_CHARS: usize = 160;

#[derive(Debug, Clone)]
pub struct Settings {
    pub command: String,
    pub interval: Duration,
    /// When false the command keeps running, but frames are only used while watched.
    pub on_demand: bool,
}

/// A simple command is exec'd by the shell, so signals reach it directly; a
/// pipeline or list keeps the shell, and the process group covers all of it.
fn shell_line(command: &str) -> String {
    if command.contains(['|', ';', '&', '\n', '(', ')', '`']) {
        command.to_owned()
    } else {
        format!("exec {command}")
    }
}

fn spawn(command: &str) -> std::io::Result<Child> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(shell_line(command))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // If kindercam dies without cleaning up, the kernel ends the child.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Keeps the last lines of the child's stderr and logs each at debug level.
fn collect_stderr(child: &mut Child, stream_name: &str) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let Some(stderr) = child.stderr.take() else {
        return tail;
    };
    let (keep, name) = (tail.clone(), stream_name.to_owned());
    let _ = std::thread::Builder::new()
        .name(format!("stderr-{stream_name}"))
        .spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            // A line is cut at 4 KiB so a child printing no newlines cannot grow it.
            while let Ok(n) = (&mut reader).take(4096).read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                line.clear();
                if text.is_empty() {
                    continue;
                }
                tracing::debug!(stream = %name, "command: {text}");
                let mut tail = keep.locked();
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(text.chars().take(STDERR_LINE_CHARS).collect());
            }
        });
    tail
}

/// SIGTERM to the group, then SIGKILL if it lingers; always reaps the shell.
fn stop_child(child: &mut Child, pgid: i32) -> Option<std::process::ExitStatus> {
    if !matches!(child.try_wait(), Ok(Some(_))) {
        terminate_group(pgid);
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Even when the shell is gone, whatever it started may not be.
    signal_group(pgid, libc::SIGKILL);
    child.wait().ok()
}

/// One session: runs the command and publishes its frames until it is stopped,
/// exits, or sends nothing usable for too long.
pub fn read_pipe(
    settings: &Settings,
    stream: &Arc<Stream>,
    control: &Control,
) -> Result<(), SourceError> {
    let label = format!("exec:{}", settings.command);
    let mut child = spawn(&settings.command)
        .map_err(|e| SourceError::new(format!("{label}: cannot start /bin/sh: {e}")))?;
    let pgid = child.id() as i32;
    control.set_child_group(pgid);
    let stderr = collect_stderr(&mut child, stream.name());
    let mut stdout = child.stdout.take().expect("stdout is piped");
    tracing::info!(stream = stream.name(), pid = pgid, "started {label}");

    let mut splitter = Splitter::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut pacer = Pacer::new(settings.interval);
    let mut last_good = Instant::now();
    let mut last_problem: Option<String> = None;
    let mut intake = Intake::new(stream.clone(), "command");
    let outcome: Result<(), String> = loop {
        if control.stopped() {
            break Ok(());
        }
        let n = match stdout.read(&mut chunk) {
            Ok(0) => break Err("closed its output".to_owned()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(format!("output unreadable: {e}")),
        };
        splitter.push(&chunk[..n]);
        while let Some(item) = splitter.next_frame() {
            let problem = match item {
                Ok(bytes) => {
                    let wanted = settings.on_demand || stream.demand_count() > 0;
                    if !wanted || !pacer.take(Instant::now()) {
                        // Not due: dropped before any work beyond finding its end.
                        last_good = Instant::now();
                        control.alive();
                        continue;
                    }
                    let _busy = stream.heartbeat().begin();
                    match mjpeg::repair(&bytes) {
                        Ok((jpeg, info)) => {
                            let jpeg = match jpeg {
                                std::borrow::Cow::Borrowed(_) => bytes,
                                std::borrow::Cow::Owned(fixed) => fixed,
                            };
                            match intake.jpeg(jpeg, info.width, info.height) {
                                Ok(frame) => {
                                    stream.publish(frame);
                                    control.delivered();
                                    control.alive();
                                    last_good = Instant::now();
                                }
                                // Counted and logged already; never sent unmasked.
                                Err(e) => {
                                    pacer.retry_now();
                                    last_problem = Some(e.to_string());
                                }
                            }
                            continue;
                        }
                        Err(e) => {
                            pacer.retry_now();
                            e.to_string()
                        }
                    }
                }
                // Bytes between frames are not a frame; just note them.
                Err(mjpeg::FrameError::Garbage { bytes }) => {
                    last_problem = Some(format!("{bytes} bytes of non-JPEG output"));
                    continue;
                }
                Err(e) => e.to_string(),
            };
            intake.drop_frame(&problem);
            last_problem = Some(problem);
        }
        if last_good.elapsed() >= NO_FRAME_LIMIT {
            let why = last_problem
                .clone()
                .unwrap_or_else(|| "no JPEG frames in its output".into());
            break Err(format!(
                "sent no usable frame for {} s ({why})",
                NO_FRAME_LIMIT.as_secs()
            ));
        }
    };
    drop(stdout);
    let status = stop_child(&mut child, pgid);
    control.set_child_group(0);
    match outcome {
        Ok(()) => Ok(()),
        Err(_) if control.stopped() => Ok(()),
        Err(what) => {
            let status = match status {
                Some(s) if s.code().is_some() => format!(", exit status {}", s.code().unwrap_or(0)),
                Some(s) => format!(", {s}"),
                None => String::new(),
            };
            let tail = stderr.locked();
            let said = tail.back().map(|l| format!(": {l}")).unwrap_or_default();
            Err(SourceError::new(format!("{label} {what}{status}{said}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_are_execed_and_pipelines_kept() {
        assert_eq!(
            shell_line("rpicam-vid -t 0 --codec mjpeg -o -"),
            "exec rpicam-vid -t 0 --codec mjpeg -o -"
        );
        assert_eq!(
            shell_line("cat a.mjpeg | pv -L 1m"),
            "cat a.mjpeg | pv -L 1m"
        );
    }
}
