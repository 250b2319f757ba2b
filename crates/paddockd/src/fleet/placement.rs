//! Where a new session goes, from the nodes' last status: among nodes that
//! are up, not draining and below their --max-sessions, first those with a
//! warm sandbox of the requested environment, then those that have it
//! built, then the rest; within each tier the less loaded of a few random
//! candidates first (power of K choices: no herd on one node between two
//! status polls, no global lock). The node has the last word: a refusal
//! (RESOURCE_EXHAUSTED) sends the router to the next in this order.

use rand::seq::SliceRandom;
use rand::Rng;

/// What placement reads of one node.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub warm: bool,
    pub built: bool,
    /// Sessions held plus creates in flight, over its maximum.
    pub load: f64,
}

/// Random candidates compared per pick.
const K: usize = 3;

/// The order to try nodes in.
pub fn order(mut nodes: Vec<Candidate>, rng: &mut impl Rng) -> Vec<String> {
    nodes.shuffle(rng);
    let tier = |c: &Candidate| match (c.warm, c.built) {
        (true, _) => 0,
        (false, true) => 1,
        _ => 2,
    };
    let mut out = Vec::with_capacity(nodes.len());
    for t in 0..3 {
        let mut pool: Vec<Candidate> = nodes.iter().filter(|c| tier(c) == t).cloned().collect();
        while !pool.is_empty() {
            // The least loaded among K random ones (the pool is shuffled: its first K).
            let k = pool.len().min(K);
            let best = (0..k).min_by(|&a, &b| pool[a].load.total_cmp(&pool[b].load)).expect("k >= 1");
            out.push(pool.remove(best).name);
            pool.shuffle(rng);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, warm: bool, built: bool, load: f64) -> Candidate {
        Candidate { name: name.into(), warm, built, load }
    }

    #[test]
    fn warm_first_then_built_then_the_less_loaded() {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let o = order(
                vec![c("cold", false, false, 0.0), c("built", false, true, 0.9), c("warm", true, true, 0.99)],
                &mut rng,
            );
            assert_eq!(o, ["warm", "built", "cold"]);
        }
        // With three or fewer in a tier, the least loaded always comes first.
        for _ in 0..100 {
            let o = order(
                vec![c("a", false, false, 0.5), c("b", false, false, 0.1), c("c", false, false, 0.3)],
                &mut rng,
            );
            assert_eq!(o, ["b", "c", "a"]);
        }
    }

    #[test]
    fn many_equal_nodes_share_the_first_place() {
        let mut rng = rand::thread_rng();
        let nodes: Vec<_> = (0..6).map(|i| c(&format!("n{i}"), false, false, 0.2)).collect();
        let firsts: std::collections::HashSet<_> =
            (0..200).map(|_| order(nodes.clone(), &mut rng).remove(0)).collect();
        assert!(firsts.len() >= 5, "{firsts:?}");
    }
}
