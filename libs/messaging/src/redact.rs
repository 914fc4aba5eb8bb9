//! Server URLs as they may appear in errors and logs: without credentials.

/// `url` without its user info (`user:password@`) and query (which may carry a password too).
pub(crate) fn url(url: &str) -> String {
    let url = url.split_once('?').map_or(url, |(base, _)| base);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_and_queries_never_show() {
        let cases = [
            ("amqp://guest:guest@127.0.0.1:5672/%2f", "amqp://127.0.0.1:5672/%2f"),
            ("redis://:s3cret@cache:6379/0?password=s3cret", "redis://cache:6379/0"),
            ("http://key:secret@127.0.0.1:5055", "http://127.0.0.1:5055"),
            ("http://127.0.0.1:5055", "http://127.0.0.1:5055"),
            ("not a url", "not a url"),
        ];
        for (input, expected) in cases {
            assert_eq!(super::url(input), expected, "{input}");
        }
    }
}
