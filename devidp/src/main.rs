//! `devidp`: run the dev IdP or an echo upstream, or make a ZITADEL application key file.
//!
//!   devidp serve --config FILE [--listen 127.0.0.1:9000]
//!   devidp echo [--listen 127.0.0.1:9100]     answers 200 with the request's method, path and headers
//!   devidp keyfile --client-id ID --out FILE

use devidp::{IdpConfig, RunningIdp};
use std::process::ExitCode;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args),
        Some("keyfile") => keyfile(&args),
        Some("echo") => echo(&args),
        _ => Err("usage: devidp serve --config FILE [--listen 127.0.0.1:9000] | devidp echo [--listen 127.0.0.1:9100] | devidp keyfile --client-id ID --out FILE".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devidp: {}", e);
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &[String]) -> Result<(), String> {
    let path = arg(args, "--config").ok_or("--config FILE is needed")?;
    let listen = arg(args, "--listen").unwrap_or_else(|| "127.0.0.1:9000".into());
    if !listen.starts_with("127.")
        && !listen.starts_with("localhost:")
        && !listen.starts_with("[::1]")
    {
        return Err("the dev IdP listens on loopback only".into());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {}", path, e))?;
    let config: IdpConfig = serde_json::from_str(&text).map_err(|e| format!("{}: {}", path, e))?;
    let idp = RunningIdp::start(config, &listen)?;
    println!(
        "devidp: issuer {} on 127.0.0.1:{} (control API under /control/)",
        idp.issuer(),
        idp.port()
    );
    loop {
        std::thread::park();
    }
}

fn loopback(listen: &str) -> Result<(), String> {
    if listen.starts_with("127.") || listen.starts_with("localhost:") || listen.starts_with("[::1]")
    {
        Ok(())
    } else {
        Err("the dev tools listen on loopback only".into())
    }
}

fn echo(args: &[String]) -> Result<(), String> {
    use devidp::httpd::{Handler, Reply, Request, Response, Server};
    let listen = arg(args, "--listen").unwrap_or_else(|| "127.0.0.1:9100".into());
    loopback(&listen)?;
    let handler: Handler = std::sync::Arc::new(|req: &Request| {
        let path = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        let headers: Vec<_> = req
            .headers
            .iter()
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        let body = serde_json::json!({"method": req.method, "path": path, "headers": headers});
        Reply::Respond(Response::json(200, &body).with_header("x-echo-upstream", "1"))
    });
    let server = Server::start(&listen, handler).map_err(|e| format!("{}: {}", listen, e))?;
    println!("echo upstream on 127.0.0.1:{}", server.port());
    loop {
        std::thread::park();
    }
}

fn keyfile(args: &[String]) -> Result<(), String> {
    let client_id = arg(args, "--client-id").ok_or("--client-id ID is needed")?;
    let out = arg(args, "--out").ok_or("--out FILE is needed")?;
    let key_id = format!("{}", devidp::idp::now() * 1000 + 1);
    let file = devidp::idp::new_key_file(&client_id, &key_id);
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    std::fs::write(&out, text + "\n").map_err(|e| format!("{}: {}", out, e))?;
    println!("wrote {} (keyId {})", out, key_id);
    Ok(())
}
