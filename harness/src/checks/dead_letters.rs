//! No dead letters, unless the scenario injected poison.

use super::model::Snapshot;
use super::{Invariant, InvariantVerdict, Policy, Subject, Violation, unread};

/// Every dead letter is listed with its topic, partition, offset, key and error: as a
/// `dead_letter` violation, or as a note when the scenario injected poison on purpose. A
/// dead-letter partition that was not read to its end (or topics not read at all,
/// [`Snapshot::dead_letters_read`]) is a `could_not_verify` violation whatever the policy: an
/// empty list read from nothing proves nothing.
pub fn no_dead_letters(snapshot: &Snapshot, policy: &Policy) -> InvariantVerdict {
    let gaps = unread(&snapshot.dead_letters_read, "the dead-letter topics");
    let listed: Vec<Violation> = snapshot
        .dead_letters
        .iter()
        .map(|d| {
            Violation::new(
                "dead_letter",
                Subject::DeadLetter {
                    topic: d.topic.clone(),
                    partition: d.partition,
                    offset: d.offset,
                },
                format!(
                    "{}/{}@{} key {}: {}",
                    d.topic,
                    d.partition,
                    d.offset,
                    d.key.as_deref().unwrap_or("none"),
                    d.error
                ),
            )
        })
        .collect();
    let n = listed.len();
    let unverified = if gaps.is_empty() {
        String::new()
    } else {
        format!(", {} parts not read to the end", gaps.len())
    };
    if policy.poison_injected {
        let scope = format!("{n} dead letters{unverified}, expected: the scenario injected poison");
        InvariantVerdict::new(Invariant::NoDeadLetters, scope, gaps, listed)
    } else {
        let mut violations = listed;
        violations.extend(gaps);
        InvariantVerdict::new(
            Invariant::NoDeadLetters,
            format!("{n} dead letters{unverified}"),
            violations,
            Vec::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Coverage, DeadLetter, Gap};
    use super::*;

    fn with_one_dead_letter() -> Snapshot {
        Snapshot {
            dead_letters_read: Coverage::Complete,
            dead_letters: vec![DeadLetter {
                topic: "payment.commands.dlq".into(),
                partition: 0,
                offset: 7,
                key: Some("0191-order".into()),
                error: "unknown schema version 9".into(),
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_dead_letter_without_injected_poison_is_a_violation_naming_topic_offset_and_error() {
        let v = no_dead_letters(&with_one_dead_letter(), &Policy::default());

        assert!(!v.held);
        assert_eq!(
            v.violations[0].subject,
            Subject::DeadLetter {
                topic: "payment.commands.dlq".into(),
                partition: 0,
                offset: 7
            }
        );
        assert_eq!(
            v.violations[0].details,
            "payment.commands.dlq/0@7 key 0191-order: unknown schema version 9"
        );
        assert_eq!(v.summary, "violated: dead_letter 1 (1 dead letters)");
    }

    #[test]
    fn a_dead_letter_of_injected_poison_holds_but_is_still_listed() {
        let policy = Policy {
            poison_injected: true,
        };

        let v = no_dead_letters(&with_one_dead_letter(), &policy);

        assert!(v.held);
        assert!(v.violations.is_empty());
        assert_eq!(v.notes.len(), 1);
        assert_eq!(v.notes[0].kind, "dead_letter");
        assert!(v.notes[0].details.contains("unknown schema version 9"));
    }

    #[test]
    fn dead_letter_topics_read_to_their_end_without_a_message_hold() {
        let read = Snapshot {
            dead_letters_read: Coverage::Complete,
            ..Snapshot::default()
        };

        let v = no_dead_letters(&read, &Policy::default());

        assert!(v.held, "{:?}", v.violations);
        assert_eq!(v.summary, "held (0 dead letters)");
    }

    #[test]
    fn dead_letter_topics_not_read_or_not_read_to_the_end_cannot_be_verified() {
        let not_read = no_dead_letters(&Snapshot::default(), &Policy::default());
        assert!(!not_read.held, "an empty list read from nothing passed");
        assert_eq!(not_read.violations[0].kind, "could_not_verify");
        assert_eq!(
            not_read.violations[0].subject,
            Subject::Evidence {
                what: "the dead-letter topics".into()
            }
        );

        let mut partial = with_one_dead_letter();
        partial.dead_letters_read = Coverage::Incomplete {
            gaps: vec![Gap {
                what: "order.events.dlq/1".into(),
                details: "read to offset 2 of 5 within 10s".into(),
            }],
        };
        let policy = Policy {
            poison_injected: true,
        };
        let v = no_dead_letters(&partial, &policy);

        assert!(
            !v.held,
            "injected poison does not excuse an unread partition"
        );
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].kind, "could_not_verify");
        assert_eq!(v.violations[0].details, "read to offset 2 of 5 within 10s");
        assert_eq!(v.notes.len(), 1, "the dead letter read is still listed");
        assert!(
            v.summary.contains("1 parts not read to the end"),
            "{}",
            v.summary
        );
    }
}
