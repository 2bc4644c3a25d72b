//! The variables each rank is started with, as torchrun sets them:
//! RANK = node_rank * nproc_per_node + local_rank, WORLD_SIZE = nnodes * nproc_per_node,
//! LOCAL_RANK, LOCAL_WORLD_SIZE = nproc_per_node, GROUP_RANK = node_rank, MASTER_ADDR,
//! MASTER_PORT.

use crate::args::LaunchArgs;

/// The environment variables of local rank `local_rank`.
pub fn rank_env(args: &LaunchArgs, local_rank: usize) -> Vec<(&'static str, String)> {
    let rank = args.node_rank * args.nproc_per_node + local_rank;
    vec![
        ("RANK", rank.to_string()),
        ("LOCAL_RANK", local_rank.to_string()),
        (
            "WORLD_SIZE",
            (args.nnodes * args.nproc_per_node).to_string(),
        ),
        ("LOCAL_WORLD_SIZE", args.nproc_per_node.to_string()),
        ("GROUP_RANK", args.node_rank.to_string()),
        ("MASTER_ADDR", args.master_addr.clone()),
        ("MASTER_PORT", args.master_port.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_node_ranks_follow_the_first_nodes() {
        let args = LaunchArgs {
            nproc_per_node: 4,
            nnodes: 2,
            node_rank: 1,
            master_addr: "10.1.2.3".into(),
            master_port: 29400,
            args: vec!["train".into()],
            program: None,
        };
        let env = rank_env(&args, 2);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("RANK"), "6");
        assert_eq!(get("LOCAL_RANK"), "2");
        assert_eq!(get("WORLD_SIZE"), "8");
        assert_eq!(get("LOCAL_WORLD_SIZE"), "4");
        assert_eq!(get("MASTER_ADDR"), "10.1.2.3");
        assert_eq!(get("MASTER_PORT"), "29400");
        assert!(args.validate().is_ok());
        let bad = LaunchArgs {
            node_rank: 2,
            ..args
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "invalid launch arguments: --node-rank 2 must be below --nnodes 2"
        );
    }
}
