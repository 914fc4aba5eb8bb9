//! The catalog's `premium_filters` flag on PostgreSQL, through the real gate with tokens of a
//! trusted OIDC issuer: a customer whose token has `tier: premium` filters by breed and age and
//! sorts by price or age, paging with cursors (the keyset follows the sort, ties by pet id);
//! a standard customer and an anonymous caller get a 403 naming the flag.

use std::cmp::Ordering;

use crate::support::stack::Stack;
use inventory::Pet;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// A customer token with `tier: premium`.
fn premium(stack: &Stack, subject: &str) -> String {
    let mut claims = stack.issuer.claims(subject, &["customer"]);
    claims["tier"] = json!("premium");
    stack.issuer.sign("rsa-1", &claims)
}

/// `GET path` of the inventory, with `token` when given.
async fn get(stack: &Stack, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = stack.http.get(stack.url("inventory", path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (status, _, body) = stack.send(request).await;
    (status, body)
}

fn ids(page: &Value) -> Vec<String> {
    let items = page["items"].as_array().unwrap_or_else(|| panic!("not a page: {page}"));
    items.iter().map(|p| p["pet_id"].as_str().expect("pet_id").to_owned()).collect()
}

/// Every page of `query` with `limit` as `token`, following `next_cursor`; the ids in order.
async fn every_page(stack: &Stack, query: &str, limit: usize, token: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut path = format!("/pets?{query}&limit={limit}");
    for _ in 0..=40 {
        let (status, page) = get(stack, &path, Some(token)).await;
        assert_eq!(status, 200, "{path}: {page}");
        let ids = ids(&page);
        assert!(ids.len() <= limit, "{path}: {} items", ids.len());
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/pets?{query}&limit={limit}&cursor={cursor}"),
            None => return seen,
        }
    }
    panic!("{query}: paging does not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premium_customers_filter_and_sort_across_pages_and_others_are_refused_naming_the_flag() {
    let stack = Stack::start("").await;
    let catalog = inventory::seed_catalog().expect("seed");
    let token = premium(&stack, "premium-pat");

    // Each case: the query, the pets it keeps, and their order by the sort key (then by id).
    type Keep = fn(&Pet) -> bool;
    type Order = fn(&Pet, &Pet) -> Ordering;
    let cases: [(&str, Keep, Order); 5] = [
        ("sort=age", |_| true, |a, b| a.age_months.cmp(&b.age_months)),
        (
            "sort=-price&category=dog&min_age_months=10&max_age_months=36",
            |p| p.category == "dog" && (10..=36).contains(&p.age_months),
            |a, b| b.price.cmp(&a.price),
        ),
        (
            "sort=price&max_price=500&min_age_months=8",
            |p| p.price <= Decimal::new(500, 0) && p.age_months >= 8,
            |a, b| a.price.cmp(&b.price),
        ),
        ("sort=-age&max_age_months=24", |p| p.age_months <= 24, |a, b| b.age_months.cmp(&a.age_months)),
        ("breed=Koi", |p| p.breed == "Koi", |_, _| Ordering::Equal),
    ];
    for (query, keep, order) in cases {
        let mut expected: Vec<&Pet> = catalog.iter().filter(|p| keep(p)).collect();
        expected.sort_by(|a, b| order(a, b).then_with(|| a.pet_id.cmp(&b.pet_id)));
        let expected: Vec<String> = expected.into_iter().map(|p| p.pet_id.clone()).collect();
        assert!(!expected.is_empty(), "{query} selects something");
        for limit in [2, 5] {
            assert_eq!(every_page(&stack, query, limit, &token).await, expected, "{query}, limit {limit}");
        }
    }

    // A cursor pages only the sort it came from.
    let (_, page) = get(&stack, "/pets?sort=price&limit=3", Some(&token)).await;
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (status, problem) = get(&stack, &format!("/pets?sort=age&limit=3&cursor={cursor}"), Some(&token)).await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("`cursor`")), "{problem}");

    // Everyone else: a 403 naming the parameters and the flag.
    let standard = stack.customer("standard-sam");
    let cases = [
        ("/pets?breed=Beagle&sort=price", Some(standard.as_str()), "`breed`, `sort` need"),
        ("/pets?min_age_months=12", Some(standard.as_str()), "`min_age_months` needs"),
        ("/pets?sort=-age", None, "`sort` needs"),
    ];
    for (path, token, starts) in cases {
        let (status, problem) = get(&stack, path, token).await;
        assert_eq!(status, 403, "{path}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(starts), "{path}: {detail}");
        assert!(detail.contains("the `premium_filters` feature, which is not enabled for you"), "{path}: {detail}");
    }
    let (status, page) = get(&stack, "/pets?category=dog", Some(&standard)).await;
    assert_eq!(status, 200, "the other filters stay open to everyone: {page}");
}
