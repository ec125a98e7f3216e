use super::*;

fn set(addrs: &[&str]) -> BTreeSet<String> {
    addrs.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn reconcile_adds_new_and_removes_vanished_addresses() {
    let diff = reconcile(
        &set(&["10.0.0.1:8080", "10.0.0.2:8080"]),
        &set(&["10.0.0.2:8080", "10.0.0.3:8080", "[fd00::1]:8080"]),
    );
    assert_eq!(
        diff,
        Diff {
            added: vec!["10.0.0.3:8080".into(), "[fd00::1]:8080".into()],
            removed: vec!["10.0.0.1:8080".into()],
        }
    );
}

#[test]
fn reconcile_of_the_same_set_changes_nothing() {
    let current = set(&["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert_eq!(reconcile(&current, &current.clone()), Diff::default());
    assert_eq!(
        reconcile(&BTreeSet::new(), &current).added,
        vec!["10.0.0.1:8080".to_owned(), "10.0.0.2:8080".to_owned()]
    );
    assert_eq!(reconcile(&current, &BTreeSet::new()).removed.len(), 2);
}
