//! A throwaway PostgreSQL cluster for tests that must disturb their database
//! (restart it, stop it, fill its disk) without touching anyone else's: made
//! with `initdb` in a temporary directory, optionally on a tmpfs of its own,
//! and run on a free port as the `postgres` user. It is stopped, and its
//! tmpfs unmounted, when dropped, however the test ends.
//!
//! That needs PostgreSQL's server programs and root; [`skipped`] tells a test
//! to skip with a notice elsewhere, or fails it when the environment asks for
//! these tests to run (`ADVPS_REQUIRE_POSTGRES=1` or `ADVPS_REQUIRE_ROOT=1`,
//! as `.ci/test` sets them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory holding `initdb` and `pg_ctl`, if PostgreSQL's server
/// programs are installed.
pub fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").is_file() && bin.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn has_postgres_user() -> bool {
    Command::new("id")
        .arg("postgres")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why a throwaway cluster cannot run here, if it cannot.
pub fn unavailable() -> Option<&'static str> {
    if pg_bin().is_none() {
        return Some("PostgreSQL's server programs (initdb, pg_ctl) are not installed");
    }
    if !is_root() || !has_postgres_user() {
        return Some("it must run as root, with a `postgres` user to run PostgreSQL as");
    }
    None
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether the test named `test` must be skipped here (a notice says why);
/// panics instead when the environment requires it to run.
pub fn skipped(test: &str) -> bool {
    let Some(why) = unavailable() else {
        return false;
    };
    for var in ["ADVPS_REQUIRE_POSTGRES", "ADVPS_REQUIRE_ROOT"] {
        assert!(!required(var), "{var} is set, but {why}");
    }
    eprintln!(
        "\nNOTICE ({test}): skipped: {why}.\n    To run it: install postgresql and run the tests \
         as root; ADVPS_REQUIRE_POSTGRES=1 makes this a failure instead of a skip.\n"
    );
    true
}

/// A PostgreSQL cluster of the test's own, stopped when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The tmpfs holding the data directory, if the cluster has one.
    mount: Option<PathBuf>,
}

impl Cluster {
    /// A cluster whose data directory is on the test's ordinary temporary
    /// file system.
    pub fn start() -> Cluster {
        Self::init(None, &[])
    }

    /// A cluster whose data directory is alone on a tmpfs of `size_mb` MB
    /// (see [`Cluster::fs`]), made with `initdb` and these extra arguments.
    /// Its log and socket stay outside, so they keep working when the tmpfs
    /// is full.
    pub fn start_on_tmpfs(size_mb: u32, initdb_args: &[&str]) -> Cluster {
        Self::init(Some(size_mb), initdb_args)
    }

    fn init(tmpfs_mb: Option<u32>, initdb_args: &[&str]) -> Cluster {
        let bin = pg_bin().expect("checked before");
        let dir = tempfile::tempdir().expect("temp dir");
        chown_postgres(dir.path());
        let mut cluster = Cluster {
            bin,
            dir,
            port: free_port(),
            mount: None,
        };
        if let Some(size) = tmpfs_mb {
            let fs = cluster.dir.path().join("fs");
            std::fs::create_dir(&fs).expect("create the tmpfs mount point");
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size}m,mode=0700"))
                .arg("tmpfs")
                .arg(&fs)
                .status()
                .expect("run mount");
            assert!(status.success(), "mount a tmpfs on {}", fs.display());
            // Set before anything else can fail, so that Drop unmounts it.
            cluster.mount = Some(fs.clone());
            chown_postgres(&fs);
        }
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(cluster.bin.join("initdb"))
            .arg("-D")
            .arg(cluster.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .args(initdb_args)
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Each logged error with its SQLSTATE, to tell what the server did.
        let conf = cluster.data().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut file, b"log_line_prefix = '%m [%p] %e '\n")
            .expect("write postgresql.conf");
        cluster.pg_ctl(&["start"]);
        cluster
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        match &self.mount {
            Some(fs) => fs.join("pgdata"),
            None => self.dir.path().join("pgdata"),
        }
    }

    /// The tmpfs holding the data directory, if the cluster has one: a file
    /// written there takes the cluster's space.
    pub fn fs(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Everything the cluster logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `pg_ctl` on the cluster (waiting for it), asserting success.
    pub fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(&options)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(
            status.success(),
            "pg_ctl {args:?} failed; its log:\n{}",
            self.log()
        );
    }

    /// Whether the cluster's postmaster is running.
    pub fn is_running(&self) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs one SQL statement on the cluster with `psql`; whether it
    /// succeeded (the server may be down, or fail the statement).
    pub fn psql(&self, sql: &str) -> bool {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(fs) = &self.mount {
            // Lazily: a process of the cluster may not have let go yet.
            let _ = Command::new("umount").arg("-l").arg(fs).status();
        }
    }
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {} failed", path.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
