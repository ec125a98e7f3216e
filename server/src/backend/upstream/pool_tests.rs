use super::*;

const OPEN_FOR: Duration = Duration::from_secs(10);

fn breaker() -> Breaker {
    Breaker::new(3, OPEN_FOR)
}

#[test]
fn the_breaker_opens_at_the_threshold_of_consecutive_failures() {
    let t0 = Instant::now();
    let mut b = breaker();
    assert_eq!(b.failure(t0), None);
    assert_eq!(b.failure(t0), None);
    assert_eq!(b.state(t0), BreakerState::Closed);
    assert!(b.available(t0));
    assert_eq!(b.failure(t0), Some(BreakerChange::Opened));
    assert_eq!(b.state(t0), BreakerState::Open);
    assert!(!b.available(t0));
    assert!(!b.available(t0 + OPEN_FOR - Duration::from_millis(1)));
    assert_eq!(b.reopens_at(t0), Some(t0 + OPEN_FOR));
    assert_eq!(b.failures(), 3);
}

#[test]
fn a_success_resets_the_count_while_closed() {
    let t0 = Instant::now();
    let mut b = breaker();
    b.failure(t0);
    b.failure(t0);
    assert_eq!(b.success(t0), None);
    assert_eq!(b.failures(), 0);
    b.failure(t0);
    b.failure(t0);
    assert_eq!(b.state(t0), BreakerState::Closed);
}

fn opened_at(t0: Instant) -> Breaker {
    let mut b = breaker();
    for _ in 0..3 {
        b.failure(t0);
    }
    b
}

#[test]
fn after_open_for_one_trial_decides() {
    let t0 = Instant::now();
    let later = t0 + OPEN_FOR;
    let mut b = opened_at(t0);
    assert_eq!(b.state(later), BreakerState::HalfOpen);
    assert!(b.available(later));
    assert!(b.begin(later), "the first request is the trial");
    assert!(!b.available(later), "only one trial at a time");
    assert_eq!(b.success(later), Some(BreakerChange::Closed));
    assert_eq!(b.state(later), BreakerState::Closed);
    assert_eq!(b.failures(), 0);
    assert!(!b.begin(later), "closed: no trial");
}

#[test]
fn a_failed_trial_reopens_for_another_period() {
    let t0 = Instant::now();
    let later = t0 + OPEN_FOR;
    let mut b = opened_at(t0);
    assert!(b.begin(later));
    assert_eq!(b.failure(later), Some(BreakerChange::Opened));
    assert_eq!(b.state(later), BreakerState::Open);
    assert_eq!(b.state(later + OPEN_FOR), BreakerState::HalfOpen);
}

#[test]
fn an_abandoned_trial_lets_another_request_try() {
    let t0 = Instant::now();
    let later = t0 + OPEN_FOR;
    let mut b = opened_at(t0);
    assert!(b.begin(later));
    b.abandon_trial();
    assert!(b.available(later));
}

#[test]
fn outcomes_while_open_do_not_end_the_period() {
    let t0 = Instant::now();
    let mut b = opened_at(t0);
    let soon = t0 + Duration::from_secs(1);
    assert_eq!(b.success(soon), None);
    assert_eq!(b.probe_success(soon), None);
    assert_eq!(b.failure(soon), None);
    assert_eq!(b.state(soon), BreakerState::Open);
    assert_eq!(b.reopens_at(soon), Some(t0 + OPEN_FOR), "not extended");
}

#[test]
fn a_successful_probe_closes_a_half_open_breaker() {
    let t0 = Instant::now();
    let mut b = opened_at(t0);
    assert_eq!(b.probe_success(t0 + OPEN_FOR), Some(BreakerChange::Closed));
    assert_eq!(b.state(t0 + OPEN_FOR), BreakerState::Closed);
    assert_eq!(b.probe_success(t0 + OPEN_FOR), None, "already closed");
}

#[test]
fn the_least_outstanding_replica_is_picked() {
    assert_eq!(pick_least_outstanding(&[2, 0, 1], 0), Some(1));
    assert_eq!(pick_least_outstanding(&[2, 0, 1], 7), Some(1));
    assert_eq!(pick_least_outstanding(&[], 0), None);
}

#[test]
fn ties_are_spread_over_the_tied_replicas() {
    let picks: Vec<usize> = (0..6)
        .map(|turn| pick_least_outstanding(&[0, 0, 0], turn).unwrap())
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    let picks: Vec<usize> = (0..4)
        .map(|turn| pick_least_outstanding(&[1, 0, 3, 0], turn).unwrap())
        .collect();
    assert_eq!(picks, vec![1, 3, 1, 3]);
}
