//! W3C trace context (`traceparent`) for messages: a message that starts a flow gets a new
//! trace; a message caused by another continues its trace with a new span id.

/// A `traceparent` for a new trace.
pub fn new_root() -> String {
    format!("00-{:032x}-{:016x}-01", nonzero_u128(), nonzero_u64())
}

/// A `traceparent` continuing `parent`'s trace with a new span id; a new trace when `parent`
/// is not a valid version-00 `traceparent`.
pub fn child_of(parent: &str) -> String {
    let parts: Vec<&str> = parent.split('-').collect();
    match parts.as_slice() {
        ["00", trace_id, span_id, flags]
            if trace_id.len() == 32
                && span_id.len() == 16
                && flags.len() == 2
                && [trace_id, span_id, flags].iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
                && trace_id.bytes().any(|b| b != b'0') =>
        {
            format!("00-{trace_id}-{:016x}-{flags}", nonzero_u64())
        }
        _ => new_root(),
    }
}

fn nonzero_u128() -> u128 {
    rand::random::<u128>().max(1)
}

fn nonzero_u64() -> u64 {
    rand::random::<u64>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let root = new_root();
        let child = child_of(&root);
        assert_eq!(root.len(), 55);
        assert_eq!(root[..35], child[..35], "same version and trace id");
        assert_ne!(root[36..52], child[36..52], "new span id");
        assert_eq!(&child[52..], "-01");
    }

    #[test]
    fn an_invalid_parent_starts_a_new_trace() {
        for bad in ["", "garbage", "00-00000000000000000000000000000000-0000000000000001-01", "01-abc-def-01"] {
            let t = child_of(bad);
            assert!(t.starts_with("00-") && t.len() == 55, "{bad}: {t}");
        }
    }
}
