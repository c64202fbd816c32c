//! `glim devices`: the adapters glim can use, best first, as `GLIM_ADAPTER` indexes them.

use glim::gpu::{list_adapters, match_adapter, AdapterChoice, AdapterSummary};

use crate::{bail, CliResult};

pub fn devices() -> CliResult<()> {
    let choice = AdapterChoice::from_env()?;
    let adapters = pollster::block_on(list_adapters(&choice));
    if adapters.is_empty() {
        let backend = std::env::var("GLIM_BACKEND").ok().filter(|b| !b.is_empty());
        match backend {
            Some(b) => bail!("no GPU adapter for GLIM_BACKEND={b}"),
            None => bail!(
                "no GPU adapter found; on a machine without a GPU install Mesa's software Vulkan driver \
                 (Debian: mesa-vulkan-drivers)"
            ),
        }
    }
    let picked = picked(&adapters, choice.adapter.as_deref());
    print!("{}", table(&adapters, picked));
    match (&choice.adapter, picked) {
        (Some(wanted), None) => bail!("GLIM_ADAPTER={wanted} matches none of these adapters"),
        (Some(wanted), Some(_)) => println!("* the adapter glim uses (GLIM_ADAPTER={wanted})"),
        (None, _) => {
            println!("* the adapter glim uses (choose another with GLIM_ADAPTER=<index or name>)")
        }
    }
    Ok(())
}

/// The adapter glim opens, by the engine's own rule.
fn picked(adapters: &[AdapterSummary], wanted: Option<&str>) -> Option<usize> {
    let names: Vec<String> = adapters.iter().map(|a| a.name.clone()).collect();
    match_adapter(&names, wanted)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// "no", or the subgroup size ("32") or range of sizes ("8-32").
fn subgroups(a: &AdapterSummary) -> String {
    match a.subgroup_sizes {
        _ if !a.subgroups => "no".into(),
        [min, max] if min == max => min.to_string(),
        [min, max] => format!("{min}-{max}"),
    }
}

/// The adapters as an aligned table, one per line, the picked one marked with `*`.
fn table(adapters: &[AdapterSummary], picked: Option<usize>) -> String {
    let header = [
        "",
        "#",
        "name",
        "backend",
        "type",
        "driver",
        "shader-f16",
        "subgroups",
        "max storage binding",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for (i, a) in adapters.iter().enumerate() {
        rows.push(vec![
            if picked == Some(i) {
                "*".into()
            } else {
                String::new()
            },
            a.index.to_string(),
            a.name.clone(),
            a.backend.clone(),
            a.device_type.clone(),
            if a.driver.is_empty() {
                "-".into()
            } else {
                a.driver.clone()
            },
            yes_no(a.shader_f16).into(),
            subgroups(a),
            format!("{} MiB", a.max_storage_binding / (1024 * 1024)),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(index: usize, name: &str) -> AdapterSummary {
        AdapterSummary {
            index,
            name: name.into(),
            backend: "Vulkan".into(),
            device_type: "Cpu".into(),
            driver: "Mesa".into(),
            shader_f16: true,
            subgroups: false,
            subgroup_sizes: [4, 128],
            timestamps: false,
            max_storage_binding: 128 << 20,
            max_buffer: 256 << 20,
        }
    }

    #[test]
    fn subgroups_show_their_size_or_range() {
        let mut a = adapter(0, "llvmpipe");
        assert_eq!(subgroups(&a), "no");
        a.subgroups = true;
        a.subgroup_sizes = [8, 8];
        assert_eq!(subgroups(&a), "8");
        a.subgroup_sizes = [8, 32];
        assert_eq!(subgroups(&a), "8-32");
    }

    #[test]
    fn picks_like_the_engine() {
        let list = [adapter(0, "NVIDIA RTX"), adapter(1, "llvmpipe (LLVM 19)")];
        assert_eq!(picked(&list, None), Some(0));
        assert_eq!(picked(&list, Some("1")), Some(1));
        assert_eq!(picked(&list, Some("5")), None);
        assert_eq!(picked(&list, Some("LLVMPIPE")), Some(1));
        assert_eq!(picked(&list, Some("radeon")), None);
    }

    #[test]
    fn table_marks_the_pick() {
        let text = table(&[adapter(0, "a"), adapter(1, "b")], Some(1));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with("*  1  b"), "{text}");
        assert!(lines[1].starts_with("   0  a"), "{text}");
        assert!(lines[1].contains("128 MiB"), "{text}");
    }
}
