//! The payment service as its own process.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = kit::Settings::load()?;
    let _telemetry = kit::telemetry::init(&settings, payment::SERVICE);
    let addr = (settings.http.host.clone(), settings.services.payment.port);
    let ctx = kit::ServiceContext::connect(settings).await?;
    let service = payment::start(&ctx).await?;
    // Every process serves the flag administration and follows flag changes.
    let flags = persistence::flags::start(&ctx).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    ctx.run(listener, vec![service, flags]).await?;
    Ok(())
}
