//! systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per message to the AF_UNIX
//! socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Under `Type=notify` the
//! unit waits for `READY=1`, shows `STATUS=`, kills the service when `WATCHDOG=1` stops arriving, and knows
//! a stop or a reload is under way from `STOPPING=1` / `RELOADING=1`. Without the variable (not under
//! systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

enum Address {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

/// Where notifications go, and the watchdog interval systemd asked for.
pub struct Notifier {
    address: Option<Address>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog is this process's only when
    /// the pid is ours: a child that inherited the environment must not ping).
    pub fn from_env() -> Notifier {
        let address = std::env::var_os("NOTIFY_SOCKET").and_then(|v| {
            let bytes = v.into_encoded_bytes();
            match bytes.first() {
                Some(b'@') => Some(Address::Abstract(bytes[1..].to_vec())),
                Some(b'/') => {
                    Some(Address::Path(std::path::PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())))
                }
                _ => None,
            }
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0 && ours)
            .map(Duration::from_micros);
        Notifier { address, watchdog }
    }

    /// Whether a service manager listens.
    /// A notifier that sends nothing (not run by a service manager, or a test).
    pub fn disabled() -> Notifier {
        Notifier { address: None, watchdog: None }
    }

    pub fn enabled(&self) -> bool {
        self.address.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the interval systemd will wait for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, message: &str) {
        let Some(address) = &self.address else { return };
        let sent = UnixDatagram::unbound().and_then(|socket| match address {
            Address::Path(p) => socket.send_to(message.as_bytes(), p),
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)
            }
        });
        // A stale variable must not disturb the daemon: said at debug level only.
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot notify the service manager");
        }
    }

    /// The daemon serves: staging is open, targets are built, the listener is bound.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading the configuration");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=finishing in-flight requests");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// Whether standard error goes to the journal: `JOURNAL_STREAM` names its device and inode, and they are
/// those of fd 2 (the variable alone is inherited across redirections).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (d, i) = v.split_once(':')?;
        Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_socket_path_and_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier { address: Some(Address::Path(path)), watchdog: Some(Duration::from_secs(30)) };
        n.ready("listening");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=listening");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));

        use std::os::linux::net::SocketAddrExt;
        let name = format!("scim-bridge-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier { address: Some(Address::Abstract(name.into_bytes())), watchdog: None };
        n.stopping();
        let len = listener.recv(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"STOPPING=1"));
        // Nothing listening: no error, no panic.
        Notifier { address: Some(Address::Path(dir.path().join("gone"))), watchdog: None }.watchdog();
    }
}
