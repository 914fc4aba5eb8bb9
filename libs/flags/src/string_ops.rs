//! flagd's `starts_with` and `ends_with` operators: `{"starts_with": [{"var": "email"}, "vet."]}`.
//! Anything but two strings gives null (falsy), as in flagd.

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{ArenaExt, CustomOperator, DataValue};

/// The name of the prefix test in rules.
pub(crate) const STARTS_WITH: &str = "starts_with";
/// The name of the suffix test in rules.
pub(crate) const ENDS_WITH: &str = "ends_with";

/// A test of a string against an affix, as a custom operator on the JsonLogic engine.
pub(crate) struct AffixTest(fn(&str, &str) -> bool);

impl AffixTest {
    /// `starts_with`.
    pub(crate) const STARTS_WITH: Self = Self(|text, prefix| text.starts_with(prefix));
    /// `ends_with`.
    pub(crate) const ENDS_WITH: Self = Self(|text, suffix| text.ends_with(suffix));
}

impl CustomOperator for AffixTest {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        Ok(match args {
            [DataValue::String(text), DataValue::String(affix)] => arena.bool((self.0)(text, affix)),
            _ => arena.null(),
        })
    }
}
