//! `devidp`: run the dev IdP, or make a ZITADEL application key file.
//!
//!   devidp serve --config FILE [--listen 127.0.0.1:9000]
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
        _ => Err("usage: devidp serve --config FILE [--listen 127.0.0.1:9000] | devidp keyfile --client-id ID --out FILE".into()),
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
