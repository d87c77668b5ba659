//! Child processes that die with the test process.
//!
//! Envoy instances shared by several tests live in statics that are never dropped, so they
//! are started with `PR_SET_PDEATHSIG`. That signal fires when the *thread* that forked
//! exits; children are therefore forked from one launcher thread that lives as long as the
//! test process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Job = (Command, Sender<io::Result<Child>>);

fn launcher() -> &'static Mutex<Sender<Job>> {
    static LAUNCHER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("child-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let parent = std::process::id() as libc::pid_t;
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            // The parent may have died between fork and prctl.
                            if libc::getppid() != parent {
                                libc::_exit(1);
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap();
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that it is killed when this test process exits.
pub fn spawn_tied(cmd: Command) -> io::Result<Child> {
    let (tx, rx) = channel();
    launcher()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("launcher thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("launcher thread is gone"))?
}

/// A free TCP port on 127.0.0.1 (bound and released; callers retry on a lost race).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
