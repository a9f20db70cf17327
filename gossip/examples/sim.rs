//! Gossip simulation report: `cargo run --release -p rhizome-gossip --features sim --example sim
//! -- --nodes 1000 [--seed 7] [--loss-secs 120] [--no-baseline] [--skip-base]
//! [--only uniform5|uniform20|one]`.
//!
//! Prints, for N simulated nodes driving the production membership and keyring code: time
//! to full membership, to spread a state entry, to see a killed node down, bytes per node
//! per second, and false down verdicts under 5 % / 20 % uniform loss and 20 % loss on one
//! node, with full Lifeguard and with local health awareness and shrinking suspicion turned
//! off (fixed suspicion timeout at its minimum, as plain foca; buddy pings and push/pull stay on).

use std::time::{Duration, Instant};

use rhizome_gossip::membership::MembershipConfig;
use rhizome_gossip::sim::{Sim, SimConfig, seed_from_env};

struct Args {
    nodes: usize,
    seed: u64,
    loss_secs: u64,
    baseline: bool,
    only: Option<String>,
    skip_base: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 1000,
        seed: seed_from_env(7),
        loss_secs: 120,
        baseline: true,
        only: None,
        skip_base: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--nodes" => args.nodes = value("--nodes")? as usize,
            "--seed" => args.seed = value("--seed")?,
            "--loss-secs" => args.loss_secs = value("--loss-secs")?,
            "--no-baseline" => args.baseline = false,
            "--skip-base" => args.skip_base = true,
            "--only" => args.only = it.next(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("timeout".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

fn periods(d: Option<Duration>, period: Duration) -> String {
    d.map_or("-".into(), |d| {
        format!("{:.1}", d.as_secs_f64() / period.as_secs_f64())
    })
}

fn converged_sim(config: SimConfig) -> (Sim, Option<Duration>) {
    let mut sim = Sim::new(config);
    sim.start_all();
    let took = sim.run_until(Duration::from_secs(600), Sim::is_converged);
    (sim, took)
}

fn row(name: &str, d: Option<Duration>, period: Duration) {
    println!(
        "| {name:<44} | {:>9} | {:>8} |",
        secs(d),
        periods(d, period)
    );
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let n = args.nodes;
    let wall = Instant::now();
    let config = SimConfig::lan(n, args.seed);
    let period = config.membership.probe_interval();
    println!(
        "rhizome gossip simulation: {n} nodes, seed {} (replay: SIM_SEED={}), AES-256-GCM on",
        args.seed, args.seed
    );
    println!("| {:<44} | {:>9} | {:>8} |", "figure", "sim s", "periods");
    println!("|{:-<46}|{:-<11}|{:-<10}|", "", "", "");

    if !args.skip_base {
        base_run(&config, n, period);
    }
    loss_runs(&args, &config, n);
    println!("(wall time {:.1} s)", wall.elapsed().as_secs_f64());
}

fn base_run(config: &SimConfig, n: usize, period: Duration) {
    let (mut sim, converge) = converged_sim(config.clone());
    row("every node knows every member", converge, period);

    // Let the join-time backlogs and fast exchanges settle, then measure a quiet window.
    sim.run_for(Duration::from_secs(60));
    let before = sim.traffic();
    let window = Duration::from_secs(30);
    sim.run_for(window);
    let after = sim.traffic();
    let bytes_per_node_s = (after.bytes - before.bytes) as f64 / n as f64 / window.as_secs_f64();
    let pkts_per_node_s = (after.packets - before.packets) as f64 / n as f64 / window.as_secs_f64();

    let key = sim.publish(
        n / 2,
        0xfeed,
        1,
        b"catalog/node-x/web: 10.0.0.9:8080 passing",
    );
    let spread = sim.run_until(Duration::from_secs(300), |s| s.reach(key) == s.running());
    row("new state entry reaches 100 % of nodes", spread, period);

    let victim = n / 3;
    sim.kill(victim);
    let detect = sim.run_until(Duration::from_secs(300), |s| s.down_seen_by_all(victim));
    row("every node sees a killed node down", detect, period);
    println!(
        "| {:<44} | {:>9.0} | {:>8.1} |",
        "steady state bytes (and packets) /node/s", bytes_per_node_s, pkts_per_node_s
    );
    println!(
        "false downs in the base run: {}, keyring rejects: {}, membership rejects: {}",
        sim.false_downs(),
        sim.traffic().open_errors,
        sim.traffic().rejected
    );
}

fn loss_runs(args: &Args, config: &SimConfig, n: usize) {
    println!();
    println!(
        "False down verdicts during {} s of loss (verdicts / distinct healthy nodes hit / healthy nodes expelled):",
        args.loss_secs
    );
    println!(
        "| {:<28} | {:>20} | {:>20} |",
        "loss", "Lifeguard", "LHA, shrink off"
    );
    println!("|{:-<30}|{:-<22}|{:-<22}|", "", "", "");
    let lossy = n / 4;
    let scenarios: [(&str, f64, Option<f64>); 3] = [
        ("5 % uniform", 0.05, None),
        ("20 % uniform", 0.20, None),
        ("20 % on one node only", 0.0, Some(0.20)),
    ];
    let ids = ["uniform5", "uniform20", "one"];
    for (id, (label, uniform, one)) in ids.into_iter().zip(scenarios) {
        if args.only.as_deref().is_some_and(|o| o != id) {
            continue;
        }
        let mut cells = Vec::new();
        for lifeguard in [true, false] {
            if !lifeguard && !args.baseline {
                cells.push("-".to_string());
                continue;
            }
            let mut c = config.clone();
            if !lifeguard {
                c.membership = MembershipConfig {
                    awareness_max_multiplier: 0,
                    suspicion_max_timeout_mult: 1,
                    ..c.membership
                };
            }
            let (mut sim, took) = converged_sim(c);
            if took.is_none() {
                cells.push("no convergence".into());
                continue;
            }
            sim.set_uniform_loss(uniform);
            if let Some(p) = one {
                sim.set_node_loss(lossy, p);
            }
            let start = sim.downs().len();
            let expelled_before = sim.expulsions().len();
            sim.run_for(Duration::from_secs(args.loss_secs));
            let expelled = sim.expulsions()[expelled_before..]
                .iter()
                .filter(|(_, h)| one.is_none() || *h != lossy)
                .count();
            let wrong: Vec<_> = sim.downs()[start..]
                .iter()
                .filter(|d| d.was_running)
                .filter(|d| {
                    one.is_none() || d.subject.addr != rhizome_gossip::sim::host_addr(lossy)
                })
                .collect();
            let mut subjects: Vec<_> = wrong.iter().map(|d| d.subject.addr).collect();
            subjects.sort();
            subjects.dedup();
            cells.push(format!(
                "{} / {} / {}",
                wrong.len(),
                subjects.len(),
                expelled
            ));
        }
        println!("| {label:<28} | {:>20} | {:>20} |", cells[0], cells[1]);
    }
    println!(
        "(cells: down verdicts / distinct healthy subjects / healthy hosts expelled, i.e. told \
         they were down and rejoined; the one-node case counts only the healthy nodes)"
    );
}
