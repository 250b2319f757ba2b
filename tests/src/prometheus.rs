//! A real Prometheus (Debian's `prometheus` package) of the test's own, on
//! loopback, scraping the targets it is given once a second; and its query
//! API through curl.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_tcp_addr;

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub addr: String,
}

/// One series of a query's answer: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (HOST:PORT, path /metrics) every
    /// second; returns once it answers queries.
    pub fn start(targets: &[String]) -> Self {
        let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("prometheus is not installed (apt-get install prometheus; scripts/setup.sh does)");
        let dir =
            std::env::temp_dir().join(format!("paddock-prometheus-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: paddockd\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = free_tcp_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Self { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.get("/-/ready").is_none_or(|body| !body.contains("Ready")) {
            assert!(Instant::now() < deadline, "prometheus did not get ready:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("curl").args(["-sf", &format!("http://{}{path}", self.addr)]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An instant query (PromQL), evaluated now.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://{}/api/v1/query", self.addr), "--data-urlencode"])
            .arg(format!("query={promql}"))
            .output()
            .expect("curl");
        assert!(out.status.success(), "query {promql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Sample {
                labels: r["metric"].as_object().unwrap().clone(),
                value: r["value"][1].as_str().unwrap().parse().unwrap(),
            })
            .collect()
    }

    /// Waits until `promql` has an answer; returns its one series.
    pub fn wait_for(&self, promql: &str, within: Duration) -> Sample {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.query(promql).into_iter().next() {
                return s;
            }
            assert!(Instant::now() < deadline, "no answer to {promql:?} within {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The state of the scrape of every target (`up`, the last error).
    pub fn targets(&self) -> String {
        self.get("/api/v1/targets").unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
}
