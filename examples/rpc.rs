//! Request/reply on the mesh: one node serves procedures, the others call
//! them, and show an answer and a named error.
//!
//! ```text
//! cargo run --example rpc -- serve [CLUSTER]    # serves "upper" and "divide"
//! cargo run --example rpc -- call [CLUSTER]     # calls every server it links to
//! ```
//!
//! `upper` answers with its input in capitals. `divide` takes `a/b` and
//! answers with the quotient, or with the named errors `bad-input` and
//! `division-by-zero`. A caller tries each node it links to; a node that
//! serves nothing answers with `NoProcedure`, and is skipped (a node that
//! started less than 2 s ago holds the call that long first, in case its
//! procedure is being made: see `Service::procedure`).

use std::time::Duration;

use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let role = args.next().unwrap_or_default();
    let cluster = args.next().unwrap_or_else(|| "rpc".into());
    let service = tcpnet::tcpnet(cluster.as_str())?;
    match role.as_str() {
        "serve" => serve(service).await,
        "call" => call(service).await,
        _ => Err("usage: rpc serve|call [CLUSTER]".into()),
    }
}

async fn serve(service: tcpnet::Service) -> Result<(), Box<dyn std::error::Error>> {
    let mut upper = service.procedure("upper")?;
    let mut divide = service.procedure("divide")?;
    service.listen(0, "0.0.0.0").await?;
    println!("serving upper and divide as {}", service.id());
    tokio::spawn(async move {
        while let Some(req) = upper.next().await {
            let answer = String::from_utf8_lossy(req.data()).to_uppercase();
            let _ = req.end(answer).await;
        }
    });
    while let Some(req) = divide.next().await {
        let text = String::from_utf8_lossy(req.data()).into_owned();
        let parsed = text.split_once('/').and_then(|(a, b)| {
            Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?))
        });
        let _ = match parsed {
            None => {
                req.error("bad-input", &format!("{text:?} is not a/b"))
                    .await
            }
            Some((_, 0.0)) => req.error("division-by-zero", "b is 0").await,
            Some((a, b)) => req.end((a / b).to_string()).await,
        };
    }
    Ok(())
}

async fn call(service: tcpnet::Service) -> Result<(), Box<dyn std::error::Error>> {
    let mut links = service.on_connection();
    service.listen(0, "0.0.0.0").await?;
    println!("calling as {}; waiting for servers", service.id());
    // Longer than a young node holds a call for a procedure it lacks.
    let t = Duration::from_secs(5);
    while let Some(conn) = links.next().await {
        let peer = conn.peer_id().clone();
        match service.request(&peer, "upper", "hello, mesh", t).await {
            Ok(answer) => println!("{peer}: upper -> {}", String::from_utf8_lossy(&answer)),
            Err(tcpnet::Error::Call {
                error: tcpnet::CallError::NoProcedure,
                ..
            }) => {
                println!("{peer}: serves nothing");
                continue;
            }
            Err(e) => println!("{peer}: upper failed: {e}"),
        }
        for input in ["7/2", "1/0"] {
            match service.request(&peer, "divide", input, t).await {
                Ok(answer) => println!(
                    "{peer}: divide {input} -> {}",
                    String::from_utf8_lossy(&answer)
                ),
                Err(tcpnet::Error::Call {
                    error: tcpnet::CallError::Remote { name, message },
                    ..
                }) => {
                    println!("{peer}: divide {input} -> error {name}: {message}")
                }
                Err(e) => println!("{peer}: divide {input} failed: {e}"),
            }
        }
    }
    Ok(())
}
