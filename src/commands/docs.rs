//! `pgrepart completions <shell>` and `pgrepart man`: the shell completions and the manual page,
//! made from the same clap definitions as the help, so they cannot drift from it.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, Shell};

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    use clap_complete::Shell as S;
    let shell = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    clap_complete::generate(shell, &mut Cli::command(), "pgrepart", out);
}

/// Writes the manual page (roff): the command, then a section per subcommand with its flags.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("pgrepart {}", sub.get_name());
        let heading = name.to_uppercase();
        let page = clap_mangen::Man::new(sub.clone().bin_name(name.clone()).display_name(name));
        roff_heading(out, &heading)?;
        page.render_synopsis_section(out)?;
        page.render_description_section(out)?;
        page.render_options_section(out)?;
        page.render_extra_section(out)?;
    }
    man.render_extra_section(out)?;
    man.render_version_section(out)?;
    Ok(())
}

fn roff_heading(out: &mut dyn Write, title: &str) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manual_has_every_subcommand_and_its_flags() {
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        for needle in [
            "PGREPART PLAN",
            "PGREPART RUN",
            "PGREPART ABORT",
            "max\\-retained\\-wal",
            "list\\-values\\-from\\-data",
        ] {
            assert!(page.contains(needle), "the manual lacks {needle}");
        }
    }

    #[test]
    fn completions_name_the_subcommands_and_their_flags() {
        let mut out = Vec::new();
        completions(Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("--partition-by") && script.contains("cutover"));
    }
}
