//! CPU bandwidth: a busy loop under `cpus = 0.5` gets about half a core. In a
//! test binary of its own so that no other test competes for the CPU.

use paddock_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn busy_loop_gets_its_share_of_cpu() {
    let d = Daemon::start();
    let mut c = d.client().await;
    let s = create(&mut c, limits(None, Some(0.5), None)).await;
    let usage_file = cgroup_roots()
        .into_iter()
        .find(|r| r.ends_with("cpuacct") || r.ends_with("cpu,cpuacct"))
        .map(|r| r.join(&d.cgroup_parent).join(&s.id).join("cpuacct.usage"))
        .expect("a cpuacct hierarchy");
    let read = || std::fs::read_to_string(&usage_file).unwrap().trim().parse::<u64>().unwrap();

    let before = read();
    let started = std::time::Instant::now();
    sh_ok(&mut c, &s.id, "end=$(( $(date +%s) + 4 )); while [ $(date +%s) -lt $end ]; do :; done").await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = (read() - before) as f64 / 1e9;
    let share = cpu / wall;
    eprintln!("cpu {cpu:.2}s over {wall:.2}s wall: {share:.2} cores");
    assert!((0.35..=0.6).contains(&share), "a 0.5-core session used {share:.2} cores");
}
