//! `cnnc check` on every model in `models/`: the summary (snapshots) and,
//! field for field, Keras's own summaries of the same models
//! (`tests/fixtures/keras/*.json`, computed with Keras 3.15).

mod common;

use common::{cnnc, models, stderr, stdout, stem};
use serde_json::Value;

#[test]
fn summaries_of_every_model() {
    for path in models() {
        let out = cnnc(&["check", &path.display().to_string()]);
        assert!(out.status.success(), "{}", stderr(&out));
        insta::assert_snapshot!(stem(&path), stdout(&out));
    }
}

#[test]
fn json_matches_keras_field_for_field() {
    let mut compared = 0;
    for path in models() {
        let fixture = format!("tests/fixtures/keras/{}.json", stem(&path));
        let keras: Value =
            serde_json::from_str(&std::fs::read_to_string(&fixture).expect("a Keras reference")).expect("valid JSON");
        let out = cnnc(&["check", &path.display().to_string(), "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let ours: Value = serde_json::from_slice(&out.stdout).expect("cnnc prints JSON");
        // Every field Keras has, cnnc has with the same value; extra fields
        // are cnnc's own.
        for key in [
            "model",
            "input_shape",
            "total_params",
            "trainable_params",
            "non_trainable_params",
        ] {
            assert_eq!(ours[key], keras[key], "{}: {key}", stem(&path));
        }
        let (ours, keras) = (ours["layers"].as_array().unwrap(), keras["layers"].as_array().unwrap());
        assert_eq!(ours.len(), keras.len(), "{}: layer count", stem(&path));
        for (o, k) in ours.iter().zip(keras) {
            for key in k.as_object().unwrap().keys() {
                assert_eq!(o[key], k[key], "{}: layer {} field {key}", stem(&path), k["name"]);
            }
        }
        compared += 1;
    }
    assert_eq!(compared, 8, "every model has a reference");
}
