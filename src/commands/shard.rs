//! `--shard K/N|auto`: which shard this process is. `auto` reads the scheduler's environment
//! here, in the command layer; the library only ever sees a plain `Shard`.
//!
//! - Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` (0-based, set by Kubernetes) and
//!   `MTSUM_SHARDS` (the Job's `completions`, which Kubernetes does not pass to the pod).
//! - Slurm job array: `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`
//!   (and `SLURM_ARRAY_TASK_STEP` when the array has a step, `--array=0-10:2`).
//! - GitLab CI `parallel:`: `CI_NODE_INDEX` (1-based) and `CI_NODE_TOTAL`.
//!
//! GitHub Actions matrices set nothing of the kind: pass `--shard ${{ matrix.shard }}/N`.

use std::str::FromStr;

use crate::pipeline::shard::Shard;
use crate::{Error, Result};

/// The `--shard` flag as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    /// `K/N`: always wins over the environment.
    Fixed(Shard),
    /// `auto`: from the scheduler's environment.
    Auto,
}

impl FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(ShardArg::Auto);
        }
        s.parse().map(ShardArg::Fixed).map_err(|e: Error| {
            format!("{e}; or `auto` to read it from a Kubernetes Indexed Job or a Slurm array")
        })
    }
}

impl ShardArg {
    /// The shard, reading the process environment for `auto`.
    pub fn resolve(self) -> Result<Shard> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// The shard, reading variables through `env` for `auto`.
    pub fn resolve_with(self, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        match self {
            ShardArg::Fixed(shard) => Ok(shard),
            ShardArg::Auto => from_env(&env),
        }
    }
}

/// The shard every scheduler whose variables are set agrees on.
fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
    let found: Vec<(&str, Shard)> = [
        ("a Kubernetes Indexed Job", kubernetes(env)?),
        ("a Slurm array", slurm(env)?),
        ("GitLab CI parallel", gitlab(env)?),
    ]
    .into_iter()
    .filter_map(|(what, shard)| Some((what, shard?)))
    .collect();
    match found.as_slice() {
        [] => {
            let hint = match env("MTSUM_SHARDS") {
                Some(_) => {
                    " (MTSUM_SHARDS is set but JOB_COMPLETION_INDEX is not: is the Job's \
                     completionMode Indexed?)"
                }
                None => "",
            };
            Err(usage(format!(
                "--shard auto found no scheduler{hint}: it reads JOB_COMPLETION_INDEX with \
                 MTSUM_SHARDS (Kubernetes Indexed Job), SLURM_ARRAY_TASK_ID with \
                 SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT (Slurm array) or CI_NODE_INDEX \
                 with CI_NODE_TOTAL (GitLab); pass --shard K/N otherwise"
            )))
        }
        [(_, shard), rest @ ..] => match rest.iter().find(|(_, other)| other != shard) {
            None => Ok(*shard),
            Some((other_what, other)) => Err(usage(format!(
                "--shard auto: the environment of {} says shard {shard} but that of \
                 {other_what} says {other}; pass --shard K/N",
                found[0].0
            ))),
        },
    }
}

/// `JOB_COMPLETION_INDEX` (0-based) of `MTSUM_SHARDS`.
fn kubernetes(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
    let Some(index) = number(env, "JOB_COMPLETION_INDEX")? else {
        return Ok(None);
    };
    let Some(count) = number(env, "MTSUM_SHARDS")? else {
        return Err(usage(
            "--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but \
             MTSUM_SHARDS is not: set it in the pod's env to the Job's completions"
                .into(),
        ));
    };
    if index >= count {
        return Err(usage(format!(
            "--shard auto: JOB_COMPLETION_INDEX={index} is not below MTSUM_SHARDS={count}: \
             MTSUM_SHARDS must equal the Job's completions"
        )));
    }
    Ok(Some(Shard::new(index + 1, count)?))
}

/// The task's place in the array: `(SLURM_ARRAY_TASK_ID - MIN) / STEP` of `COUNT`.
fn slurm(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
    let Some(id) = number(env, "SLURM_ARRAY_TASK_ID")? else {
        return Ok(None);
    };
    let required = |name: &str| {
        number(env, name)?.ok_or_else(|| {
            usage(format!(
                "--shard auto: SLURM_ARRAY_TASK_ID is set (a Slurm array) but {name} is not"
            ))
        })
    };
    let min = required("SLURM_ARRAY_TASK_MIN")?;
    let count = required("SLURM_ARRAY_TASK_COUNT")?;
    let step = number(env, "SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
    let offset = id.checked_sub(min).filter(|o| o % step == 0);
    let index = offset.map(|o| o / step).filter(|&i| i < count);
    let Some(index) = index else {
        return Err(usage(format!(
            "--shard auto: SLURM_ARRAY_TASK_ID={id} is not one of SLURM_ARRAY_TASK_COUNT={count} \
             tasks from SLURM_ARRAY_TASK_MIN={min} in steps of {step}: the array has gaps \
             (e.g. --array=1,5,7); use a range such as --array=0-{} or pass --shard K/N",
            count.saturating_sub(1)
        )));
    };
    Ok(Some(Shard::new(index + 1, count)?))
}

/// GitLab's `CI_NODE_INDEX` (1-based) of `CI_NODE_TOTAL`.
fn gitlab(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
    let Some(index) = number(env, "CI_NODE_INDEX")? else {
        return Ok(None);
    };
    let Some(count) = number(env, "CI_NODE_TOTAL")? else {
        return Err(usage(
            "--shard auto: CI_NODE_INDEX is set (GitLab parallel) but CI_NODE_TOTAL is not".into(),
        ));
    };
    Shard::new(index, count).map(Some).map_err(|_| {
        usage(format!(
            "--shard auto: CI_NODE_INDEX={index} is not between 1 and CI_NODE_TOTAL={count}"
        ))
    })
}

/// A variable that must be a whole number when set (an empty value counts as unset).
fn number(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>> {
    match env(name).map(|v| v.trim().to_string()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| usage(format!("--shard auto: {name}=`{v}` is not a whole number"))),
    }
}

fn usage(message: String) -> Error {
    Error::Usage(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)]) -> Result<Shard> {
        ShardArg::Auto.resolve_with(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn err(vars: &[(&str, &str)]) -> String {
        resolve(vars).unwrap_err().to_string()
    }

    #[test]
    fn kubernetes_index_is_zero_based() {
        let env = [("JOB_COMPLETION_INDEX", "1"), ("MTSUM_SHARDS", "3")];
        assert_eq!(resolve(&env).unwrap(), Shard::new(2, 3).unwrap());
        assert!(err(&[("JOB_COMPLETION_INDEX", "1")]).contains("MTSUM_SHARDS is not"));
        let e = err(&[("JOB_COMPLETION_INDEX", "3"), ("MTSUM_SHARDS", "3")]);
        assert!(
            e.contains("JOB_COMPLETION_INDEX=3 is not below MTSUM_SHARDS=3"),
            "{e}"
        );
        let e = err(&[("JOB_COMPLETION_INDEX", "x"), ("MTSUM_SHARDS", "3")]);
        assert!(e.contains("JOB_COMPLETION_INDEX=`x`"), "{e}");
        assert!(err(&[("MTSUM_SHARDS", "3")]).contains("completionMode Indexed"));
    }

    #[test]
    fn slurm_tasks_count_from_the_array_minimum() {
        let env = |id: &'static str| {
            [
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_MIN", "4"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ]
        };
        assert_eq!(resolve(&env("4")).unwrap().to_string(), "1/3");
        assert_eq!(resolve(&env("6")).unwrap().to_string(), "3/3");
        assert!(err(&env("7")).contains("SLURM_ARRAY_TASK_ID=7"));
        assert!(err(&env("3")).contains("SLURM_ARRAY_TASK_ID=3"));
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(resolve(&stepped).unwrap().to_string(), "3/3");
        let e = err(&[("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_MIN", "0")]);
        assert!(e.contains("SLURM_ARRAY_TASK_COUNT is not"), "{e}");
    }

    #[test]
    fn gitlab_index_is_one_based() {
        let env = [("CI_NODE_INDEX", "3"), ("CI_NODE_TOTAL", "3")];
        assert_eq!(resolve(&env).unwrap().to_string(), "3/3");
        assert!(err(&[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "3")]).contains("between 1"));
    }

    #[test]
    fn no_scheduler_or_disagreeing_ones_are_errors() {
        let e = err(&[]);
        assert!(
            e.contains("found no scheduler") && e.contains("--shard K/N"),
            "{e}"
        );
        let both = [
            ("JOB_COMPLETION_INDEX", "0"),
            ("MTSUM_SHARDS", "2"),
            ("CI_NODE_INDEX", "2"),
            ("CI_NODE_TOTAL", "2"),
        ];
        assert!(err(&both).contains("says shard 1/2"));
    }

    #[test]
    fn an_explicit_shard_wins_over_the_environment() {
        let arg: ShardArg = "2/5".parse().unwrap();
        let shard = arg.resolve_with(|_| Some("0".to_string())).unwrap();
        assert_eq!(shard.to_string(), "2/5");
        assert_eq!("AUTO".parse::<ShardArg>().unwrap(), ShardArg::Auto);
        assert!("2-5".parse::<ShardArg>().unwrap_err().contains("not K/N"));
    }
}
