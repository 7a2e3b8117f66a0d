//! Every method by name, as the model zoo lists models: its kind, a one-line description and
//! how it is prepared from its `[method]` keys. Help texts and errors list from here; adding a
//! method is its module plus one entry below.

use crate::config::{ExperimentConfig, MethodSection};
use crate::error::Result;
use crate::invalid;
pub use crate::method::{MethodEntry, MethodKind, PrepareFn, PreparedMethod};
use crate::methods::{filter, ftwt, masksparsity, paam, slimming, unstructured};
use crate::steps::structured::Importance;

/// Every registered method.
pub const METHODS: &[MethodEntry] = &[
    MethodEntry {
        name: "magnitude",
        kind: MethodKind::Unstructured,
        description: "remove the smallest |w|, globally or by a layer quota",
        prepare: unstructured::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "random",
        kind: MethodKind::Unstructured,
        description: "remove random weights, by a layer quota (uniform, uniform+, er, erk, erk-es, igq)",
        prepare: unstructured::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "lamp",
        kind: MethodKind::Unstructured,
        description: "layer-adaptive magnitude scores (Lee et al. 2021)",
        prepare: unstructured::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "snip",
        kind: MethodKind::Unstructured,
        description: "connection sensitivity |g * w| on training batches (Lee et al. 2019)",
        prepare: unstructured::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "grasp",
        kind: MethodKind::Unstructured,
        description: "gradient-signal preservation -w * Hg (Wang et al. 2020)",
        prepare: unstructured::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "synflow",
        kind: MethodKind::Unstructured,
        description: "iterative synaptic flow, data-free, global (Tanaka et al. 2020)",
        prepare: unstructured::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "l1-filter",
        kind: MethodKind::Structured,
        description: "remove the channels of smallest filter L1 norm (Li et al. 2017), then compact",
        prepare: filter::prepare,
        one_shot: Some(Importance::L1),
    },
    MethodEntry {
        name: "l2-filter",
        kind: MethodKind::Structured,
        description: "remove the channels of smallest filter L2 norm, then compact",
        prepare: filter::prepare,
        one_shot: Some(Importance::L2),
    },
    MethodEntry {
        name: "bn-scale",
        kind: MethodKind::Structured,
        description: "remove the channels of smallest BatchNorm |gamma|, then compact",
        prepare: filter::prepare,
        one_shot: Some(Importance::BnScale),
    },
    MethodEntry {
        name: "random-filter",
        kind: MethodKind::Structured,
        description: "remove random channels (the structured sanity baseline), then compact",
        prepare: filter::prepare,
        one_shot: Some(Importance::Random),
    },
    MethodEntry {
        name: "taylor",
        kind: MethodKind::Structured,
        description: "remove the channels of smallest first-order Taylor score (Molchanov et al. 2019)",
        prepare: filter::prepare,
        one_shot: Some(Importance::Taylor),
    },
    MethodEntry {
        name: "slimming",
        kind: MethodKind::Structured,
        description: "Network Slimming: L1 on BatchNorm scales, global |gamma| cut, compact, fine-tune (Liu et al. 2017)",
        prepare: slimming::prepare,
        one_shot: Some(Importance::BnScale),
    },
    MethodEntry {
        name: "masksparsity",
        kind: MethodKind::Structured,
        description: "MaskSparsity: L1 on the BatchNorm scales of masked channels only, cut, compact, fine-tune (Jiang et al. 2022)",
        prepare: masksparsity::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "paam",
        kind: MethodKind::Structured,
        description: "PAAM: filter scores learned by attention from the filter weights, trained with the network under one global budget, cut, compact (Babaiee et al. 2022)",
        prepare: paam::prepare,
        one_shot: None,
    },
    MethodEntry {
        name: "ftwt",
        kind: MethodKind::Dynamic,
        description: "Fire Together Wire Together: per-input channel gates from small heads trained on self-supervised targets (Elkerdawy et al. 2022)",
        prepare: ftwt::prepare,
        one_shot: None,
    },
];

/// Names of the methods of one kind, for help texts and errors.
pub fn names(kind: MethodKind) -> Vec<&'static str> {
    METHODS
        .iter()
        .filter(|m| m.kind == kind)
        .map(|m| m.name)
        .collect()
}

/// The entry named `name`; an unknown name lists both kinds.
pub fn find(name: &str) -> Result<&'static MethodEntry> {
    match METHODS.iter().find(|m| m.name == name) {
        Some(m) => Ok(m),
        None => invalid!(
            "unknown pruning method `{name}` (unstructured: {}; structured: {}; dynamic: {})",
            names(MethodKind::Unstructured).join(", "),
            names(MethodKind::Structured).join(", "),
            names(MethodKind::Dynamic).join(", ")
        ),
    }
}

/// The method a config describes: `[method]`, else the older `[prune]` section, else global
/// magnitude pruning to 80 % (the default of `[prune]`).
pub fn resolve(cfg: &ExperimentConfig) -> Result<Box<dyn PreparedMethod>> {
    match (&cfg.method, &cfg.prune) {
        (Some(_), Some(_)) => {
            invalid!("give the method once: either [method] or the older [prune] section, not both")
        }
        (Some(MethodSection { name, keys }), None) => {
            let entry = find(name)?;
            (entry.prepare)(entry, keys, cfg)
        }
        (None, prune) => Ok(Box::new(unstructured::Prepared::from_section(
            prune.clone().unwrap_or_default(),
            cfg,
        )?)),
    }
}

/// Checks a whole config: every value of its sections, and its method's name and keys.
pub fn check(cfg: &ExperimentConfig) -> Result<()> {
    cfg.validate()?;
    resolve(cfg).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_unstructured_score_is_registered() {
        let mut seen = std::collections::BTreeSet::new();
        for m in METHODS {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(!m.description.is_empty());
        }
        assert_eq!(
            names(MethodKind::Unstructured),
            crate::steps::unstructured::METHODS.to_vec()
        );
        let e = find("snop").err().expect("unknown").to_string();
        assert!(
            e.contains("snop") && e.contains("synflow") && e.contains("slimming"),
            "{e}"
        );
    }

    fn cfg(text: &str) -> Result<ExperimentConfig> {
        let c: ExperimentConfig =
            toml::from_str(text).map_err(|e| crate::MethodError::Invalid(e.to_string()))?;
        check(&c)?;
        Ok(c)
    }

    #[test]
    fn method_sections_are_checked_key_by_key() {
        cfg("[method]\nname = \"slimming\"\nlambda = 1e-4\npercentile = 0.5\n").unwrap();
        cfg("[method]\nname = \"l1-filter\"\nmacs_reduction = 0.5\n").unwrap();
        cfg("[method]\nname = \"magnitude\"\nsparsity = 0.5\nwhen = \"gradual\"\n").unwrap();
        let e = cfg("[method]\nname = \"slimming\"\nlamda = 1e-4\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lamda") && e.contains("slimming"), "{e}");
        let e = cfg("[method]\nname = \"l1-filter\"\nsparsity = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sparsity") && e.contains("l1-filter"), "{e}");
        let e = cfg("[method]\nname = \"l1-filter\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[method] macs_reduction"), "{e}");
        let e =
            cfg("[method]\nname = \"masksparsity\"\nmacs_reduction = 0.5\nchannel_ratio = 0.5\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("give one target"), "{e}");
        let e = cfg("[method]\nname = \"masksparsity\"\nmask = \"uniform\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("uniform") && e.contains("needs a target"), "{e}");
        let e = cfg("[method]\nname = \"pruneit\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown pruning method `pruneit`"), "{e}");
        let e = cfg("[method]\nname = \"magnitude\"\n[prune]\nsparsity = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
    }
}
