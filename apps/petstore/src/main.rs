//! `petstore`: run the whole pet store in one process, or one of its services.
//!
//! ```text
//! petstore                      all six services on http.host:http.port (default 127.0.0.1:8080)
//! petstore serve <service>      one service on its own port (services.<service>.port)
//! petstore rebuild-projections  rebuild the order projection from the order event log
//! petstore dlq list|replay …    list or replay dead letters of a running pet store (see `dlq`)
//! petstore seed-pets --count N  list N generated pets in a running pet store (see `seed`)
//! petstore token --sub alice --role customer [--role admin] [--tier premium] [--ttl 1h]
//!                               print a bearer token the configuration accepts (HS256 key source)
//! ```
//!
//! Configuration: `config/enhanced_config.yaml` (embedded defaults: in-memory everything),
//! `PETSTORE_ENV`, `PETSTORE_CONFIG` and `PETSTORE__…` variables; see the README.

mod dlq;
mod seed;
mod token;

use anyhow::{Context, bail};
use kit::{Service, ServiceContext, Settings};

const SERVICES: [&str; 6] = ["inventory", "order", "payment", "delivery", "notification", "orchestrator"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A client of a running pet store: it needs no configuration, and says what failed in
    // one line (the API's problem detail) rather than as a program error.
    if let ["dlq", rest @ ..] = args.as_slice() {
        if let Err(error) = dlq::run(rest).await {
            eprintln!("petstore dlq: {error:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    if let ["seed-pets", rest @ ..] = args.as_slice() {
        if let Err(error) = seed::run(rest).await {
            eprintln!("petstore seed-pets: {error:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let settings = Settings::load()?;
    match args.as_slice() {
        [] | ["all"] => all_in_one(settings).await,
        ["serve", name] => serve_one(settings, name).await,
        ["rebuild-projections"] => rebuild_projections(settings).await,
        ["token", rest @ ..] => {
            println!("{}", token::run(&settings, rest)?);
            Ok(())
        }
        _ => bail!(
            "usage: petstore [all | serve <{}> | rebuild-projections | dlq … | seed-pets … | token …]\n       {}\n       {}\n       {}",
            SERVICES.join("|"),
            dlq::USAGE,
            seed::USAGE,
            token::USAGE
        ),
    }
}

async fn start(ctx: &ServiceContext, name: &str) -> anyhow::Result<Service> {
    Ok(match name {
        "inventory" => inventory::start(ctx).await?,
        "order" => order::start(ctx).await?,
        "payment" => payment::start(ctx).await?,
        "delivery" => delivery::start(ctx).await?,
        "notification" => notification::start(ctx).await?,
        "orchestrator" => orchestrator::start(ctx).await?,
        other => bail!("unknown service `{other}`; one of: {}", SERVICES.join(", ")),
    })
}

/// Every service in this process, sharing one bus (in the default configuration an
/// in-memory one) and serving one entry point.
async fn all_in_one(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = kit::telemetry::init(&settings, "petstore");
    let addr = (settings.http.host.clone(), settings.http.port);
    let ctx = ServiceContext::connect(settings).await?;
    let mut services = Vec::new();
    for name in SERVICES {
        services.push(start(&ctx, name).await?);
    }
    services.push(persistence::flags::start(&ctx).await?);
    let listener =
        tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {}:{}", addr.0, addr.1))?;
    tracing::info!(address = %listener.local_addr()?, storage = ?ctx.settings.storage, "petstore (all-in-one) is listening");
    ctx.run(listener, services).await?;
    Ok(())
}

async fn serve_one(settings: Settings, name: &str) -> anyhow::Result<()> {
    let port = match name {
        "inventory" => settings.services.inventory.port,
        "order" => settings.services.order.port,
        "payment" => settings.services.payment.port,
        "delivery" => settings.services.delivery.port,
        "notification" => settings.services.notification.port,
        "orchestrator" => settings.services.orchestrator.port,
        other => bail!("unknown service `{other}`; one of: {}", SERVICES.join(", ")),
    };
    let _telemetry = kit::telemetry::init(&settings, name);
    let addr = (settings.http.host.clone(), port);
    let ctx = ServiceContext::connect(settings).await?;
    let service = start(&ctx, name).await?;
    let flags = persistence::flags::start(&ctx).await?;
    let listener =
        tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {}:{}", addr.0, addr.1))?;
    tracing::info!(service = name, address = %listener.local_addr()?, "listening");
    ctx.run(listener, vec![service, flags]).await?;
    Ok(())
}

async fn rebuild_projections(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = kit::telemetry::init(&settings, "petstore");
    let ctx = ServiceContext::connect(settings).await?;
    let (_, store) = order::start_with_store(&ctx).await?;
    let n = store.rebuild_projection().await?;
    println!("order projection rebuilt: {n} orders");
    ctx.shutdown.cancel();
    Ok(())
}
