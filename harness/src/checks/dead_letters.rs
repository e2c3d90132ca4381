//! No dead letters, unless the scenario injected poison.

use super::model::Snapshot;
use super::{Invariant, InvariantVerdict, Policy, Subject, Violation};

/// Every dead letter is listed with its topic, partition, offset, key and error: as a
/// `dead_letter` violation, or as a note when the scenario injected poison on purpose.
pub fn no_dead_letters(snapshot: &Snapshot, policy: &Policy) -> InvariantVerdict {
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
    if policy.poison_injected {
        let scope = format!("{n} dead letters, expected: the scenario injected poison");
        InvariantVerdict::new(Invariant::NoDeadLetters, scope, Vec::new(), listed)
    } else {
        InvariantVerdict::new(
            Invariant::NoDeadLetters,
            format!("{n} dead letters"),
            listed,
            Vec::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::DeadLetter;
    use super::*;

    fn with_one_dead_letter() -> Snapshot {
        Snapshot {
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
}
