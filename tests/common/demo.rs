//! The demo example as a peer that is a whole other process: it can be
//! frozen (`SIGSTOP`), woken, closed gracefully (`SIGTERM`) or killed.

use std::process::{Command, Stdio};

/// A demo process, killed when dropped. It inherits the calling thread's
/// network namespace.
pub(crate) struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Demo {
    /// Starts the demo with the key pair `key` (so its id) in cluster "c",
    /// with `env` set too.
    pub(crate) fn start(key: &tcpnet::Identity, env: &[(&str, &str)]) -> Demo {
        let child = Command::new(super::demo_binary())
            .arg("c")
            .env("TCPNET_KEY_FILE", super::key_file(key))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the demo");
        Demo(child)
    }

    /// Sends the process `sig`.
    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: a plain syscall on a process we own.
        let r = unsafe { libc::kill(self.0.id() as i32, sig) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }
}
