//! `petstore token`: a bearer token the running configuration accepts, for curl and
//! `dev/demo.sh` (the development HS256 key source; with an OIDC issuer, tokens come from it).

use std::time::Duration;

use anyhow::{Context, bail};
use kit::{Settings, auth::TokenRequest};

/// How `petstore token` is used.
pub const USAGE: &str = "petstore token --sub SUBJECT [--role ROLE]... [--tier TIER] [--ttl 1h]";

/// Reads the options and signs the token.
pub fn run(settings: &Settings, args: &[&str]) -> anyhow::Result<String> {
    let mut request =
        TokenRequest { subject: String::new(), roles: Vec::new(), tier: None, ttl: Duration::from_secs(3600) };
    let mut rest = args.iter();
    while let Some(&option) = rest.next() {
        let mut value = || rest.next().copied().with_context(|| format!("{option} needs a value; usage: {USAGE}"));
        match option {
            "--sub" => request.subject = value()?.to_owned(),
            "--role" => request.roles.push(value()?.to_owned()),
            "--tier" => request.tier = Some(value()?.to_owned()),
            "--ttl" => {
                let text = value()?;
                request.ttl = humantime::parse_duration(text)
                    .with_context(|| format!("--ttl `{text}` is not a duration such as 15m or 1h"))?;
            }
            other => bail!("unknown option `{other}`; usage: {USAGE}"),
        }
    }
    if request.subject.is_empty() {
        bail!("--sub is required; usage: {USAGE}");
    }
    kit::auth::mint(&settings.auth, &request).map_err(anyhow::Error::msg)
}
