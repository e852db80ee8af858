//! Work distribution: workers serve a typed procedure and say so in their
//! metadata (`role=primes-worker`); a dispatcher finds them among the
//! members once discovery has settled, and hands each job to the next
//! worker, trying another when one is gone or cannot answer.
//!
//! ```text
//! cargo run --example work -- worker [CLUSTER]   # start a few
//! cargo run --example work -- dispatch [CLUSTER] # sends 20 jobs
//! ```

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tcpnet::{CallError, Error, MemberState, Settings};

/// A job: count the primes below `below`.
#[derive(Serialize, Deserialize)]
struct Job {
    below: u64,
}

const ROLE: (&str, &str) = ("role", "primes-worker");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let role = args.next().unwrap_or_default();
    let cluster = args.next().unwrap_or_else(|| "work".into());
    match role.as_str() {
        "worker" => {
            let service = tcpnet::tcpnet(Settings::new(cluster).meta(ROLE.0, ROLE.1))?;
            // Served before listen: no call reaches this node before it
            // can answer (a call to a name nobody serves gets NoProcedure).
            let mut jobs = service.rpc::<Job, u64>("primes").serve()?;
            service.listen(0, "0.0.0.0").await?;
            println!("worker {}", service.id());
            while let Some(job) = jobs.next().await {
                let Ok(job) = job else { continue }; // not a Job: answered bad-request
                let below = job.value().below;
                let n = (2..below)
                    .filter(|k| (2..*k).take_while(|d| d * d <= *k).all(|d| k % d != 0))
                    .count();
                let _ = job.reply(&(n as u64)).await;
            }
        }
        "dispatch" => {
            let service = tcpnet::tcpnet(cluster.as_str())?;
            let primes = service.rpc::<Job, u64>("primes");
            service.listen(0, "0.0.0.0").await?;
            // Every node found by then is linked, its metadata known.
            service.ready().await?;
            let mut next = 0;
            for i in 0..20u64 {
                let job = Job {
                    below: 1000 * (i + 1),
                };
                loop {
                    // Calls need a direct link: relayed members are left out.
                    let workers: Vec<_> = service
                        .members_with(ROLE.0, ROLE.1)
                        .into_iter()
                        .filter(|m| matches!(m.state, MemberState::Linked | MemberState::Suspect))
                        .collect();
                    if workers.is_empty() {
                        return Err("no worker in the cluster".into());
                    }
                    let worker = &workers[next % workers.len()].id;
                    next += 1;
                    match primes.call(worker, &job, Duration::from_secs(5)).await {
                        Ok(n) => {
                            println!("job {i}: {n} primes below {} (by {worker})", job.below);
                            break;
                        }
                        // The worker answered with an error: the job itself
                        // is at fault, another worker would fail it too.
                        Err(Error::Call {
                            error: CallError::Remote { name, message },
                            ..
                        }) => return Err(format!("{name}: {message}").into()),
                        // Gone, not linked, or no answer in time: the next
                        // worker gets it.
                        Err(e) => eprintln!("job {i} on {worker}: {e}; trying another"),
                    }
                }
            }
            service.close().await;
        }
        _ => return Err("usage: work worker|dispatch [CLUSTER]".into()),
    }
    Ok(())
}
