//! The frame around the experiment: menu line, status line, first-start explanation, notes, the
//! error line, the read-only banner and the close dialog. Small panels with little or no state
//! of their own, kept together because each is a few lines.

use egui::{RichText, Ui};

use super::{ViewCtx, WARN, hint};
use crate::ui::commands::{Command, Commands};
use crate::ui::document::Document;
use crate::ui::prefs::PrefEdit;
use crate::ui::state::Busy;

/// The menu line: file actions, theme, run controls.
#[derive(Debug, Default)]
pub struct TopBar;

impl TopBar {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) {
        // Wraps onto a second line in a narrow window rather than pushing Run and Stop out.
        ui.horizontal_wrapped(|ui| {
            ui.heading("kvlab");
            ui.separator();
            ui.menu_button("Session", |ui| session_menu(ui, ctx, cmds));
            if ui.button("Open model…").clicked() {
                cmds.push(Command::PickModel);
            }
            ui.menu_button("Recent models", |ui| {
                if ctx.prefs.recent_models.is_empty() {
                    ui.label("No recent models");
                }
                for p in &ctx.prefs.recent_models {
                    if ui.button(p.display().to_string()).clicked() {
                        cmds.push(Command::LoadModel(p.clone()));
                        ui.close();
                    }
                }
            });
            if ui
                .button("Seed experiment")
                .on_hover_text("Replace the experiment with the seed's")
                .clicked()
            {
                cmds.push(Command::ResetToSeed);
            }
            ui.separator();
            run_buttons(ui, ctx, cmds);
            ui.separator();
            let dark = ctx.prefs.dark_mode;
            let label = if dark { "Light theme" } else { "Dark theme" };
            if ui.button(label).clicked() {
                cmds.push(Command::SetPref(PrefEdit::DarkMode(!dark)));
            }
        });
    }
}

/// The Session menu: open, save, recent sessions.
fn session_menu(ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) {
    for c in [Command::Open, Command::Save, Command::SaveAs] {
        if c.menu_button(ui).clicked() {
            cmds.push(c);
            ui.close();
        }
    }
    ui.separator();
    if ctx.prefs.recent_sessions.is_empty() {
        hint(ui, "No recent sessions");
    }
    for p in &ctx.prefs.recent_sessions {
        if ui.button(p.display().to_string()).clicked() {
            cmds.push(Command::OpenSession(p.clone()));
            ui.close();
        }
    }
}

/// Run and Stop, with their shortcuts on hover (and why Run is disabled, when it is).
fn run_buttons(ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) {
    let shortcut = Command::Run.shortcut_text(ui.ctx());
    let run = ui
        .add_enabled(
            ctx.can_run(),
            egui::Button::new(RichText::new(Command::Run.label()).strong()),
        )
        .on_hover_text(&shortcut)
        .on_disabled_hover_text(ctx.run_blocker.unwrap_or_default());
    if run.clicked() {
        cmds.push(Command::Run);
    }
    if ui
        .add_enabled(
            *ctx.busy != Busy::Idle,
            egui::Button::new(Command::Stop.label()),
        )
        .on_hover_text(Command::Stop.shortcut_text(ui.ctx()))
        .clicked()
    {
        cmds.push(Command::Stop);
    }
    let mut attention = ctx.prefs.attention;
    ui.checkbox(&mut attention, "capture attention")
        .on_hover_text(ATTENTION_HELP);
    super::set_pref_if(cmds, ctx.prefs.attention, attention, PrefEdit::Attention);
    if matches!(ctx.busy, Busy::Running { .. }) {
        ui.spinner();
    }
}

/// What the run setting "capture attention" does.
pub const ATTENTION_HELP: &str = "Runs record, per layer and head, what the prompt tokens after \
    the needle and every grid row's steps pay to the needle (the Attention tab). Flash attention \
    is off in such runs, so their numbers differ slightly from other runs'.";

/// The status line: what runs, how fast, progress.
#[derive(Debug, Default)]
pub struct StatusBar;

impl StatusBar {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx) {
        ui.horizontal(|ui| {
            match ctx.busy {
                Busy::Idle => {}
                Busy::Loading(p) => {
                    ui.add(
                        egui::ProgressBar::new(*p)
                            .desired_width(160.0)
                            .show_percentage(),
                    );
                }
                Busy::Running { stage, done, total } => {
                    let frac = *done as f32 / (*total).max(1) as f32;
                    ui.add(
                        egui::ProgressBar::new(frac)
                            .desired_width(160.0)
                            .text(stage.clone()),
                    );
                    if let Some(t0) = ctx.live.started {
                        if ctx.live.sweep {
                            ui.label(sweep_progress(*done, *total, t0.elapsed()));
                        } else {
                            let s = t0.elapsed().as_secs_f32().max(1e-3);
                            ui.label(format!("{:.1} tokens/s", ctx.live.tokens as f32 / s));
                        }
                    }
                }
            }
            if ctx.files_busy {
                ui.spinner();
            }
            ui.label(ctx.status);
        });
    }
}

/// A sweep's progress: "k/N items", and once an item is done, about how long the rest will take
/// at the pace so far.
pub fn sweep_progress(done: usize, total: usize, elapsed: std::time::Duration) -> String {
    let mut s = format!("{done}/{total} items");
    if done > 0 && done < total {
        let left = elapsed.as_secs_f64() / done as f64 * (total - done) as f64;
        if left < 90.0 {
            s += &format!(", about {}s left", left.ceil() as u64);
        } else {
            s += &format!(", about {} min left", (left / 60.0).round() as u64);
        }
    }
    s
}

/// Free-text notes saved with the session.
#[derive(Debug, Default)]
pub struct NotesPanel;

impl NotesPanel {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, doc: &mut Document) {
        ui.heading("Notes");
        let label = ui.label(RichText::new("Saved with the session and shown in reports.").weak());
        ui.add(
            egui::TextEdit::multiline(&mut doc.notes)
                .desired_rows(3)
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label.id);
    }
}

/// What a newcomer needs to read the first screen: what the seed experiment does, what to look
/// at, and why the demo model does not show the seed's effect. Shown until dismissed.
#[derive(Debug, Default)]
pub struct WelcomePanel;

impl WelcomePanel {
    /// Draws it (nothing once dismissed).
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) {
        if ctx.prefs.welcome_dismissed {
            return;
        }
        egui::Frame::group(ui.style())
            .fill(ui.visuals().faint_bg_color)
            .show(ui, |ui| {
                ui.label(RichText::new("Welcome to kvlab: the seed experiment").strong());
                ui.label(WELCOME_TEXT);
                if ui.button("Got it").clicked() {
                    cmds.push(Command::SetPref(PrefEdit::WelcomeDismissed));
                }
            });
        ui.separator();
    }
}

/// The first-start explanation (the README's quick start says the same).
pub const WELCOME_TEXT: &str = "A travel question names one city, SF or NY: the needle. For each \
    city kvlab caches the prompt but its last token, edits the needle's cache entries in every \
    layer (zero them, transplant the other city's, or remove them), feeds the last token and \
    generates. Each grid row is one edit; compare it with the unedited baseline above it. Read the \
    verdicts and preferences: \"keeps SF\" means the edited cache still favours SF's expected \
    answers, \"flips to NY\" that it favours the other city's. The demo model (SmolLM2, 135M \
    parameters) is tiny: it does not carry the needle the way Llama 3.1 8B did where the seed saw \
    the effect, and its text can read oddly. Open a larger GGUF model to test the claim.";

/// The last error, until dismissed.
#[derive(Debug, Default)]
pub struct ErrorLine;

impl ErrorLine {
    /// Draws it (nothing without an error).
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, cmds: &mut Commands) {
        let Some(e) = ctx.error else { return };
        // Dismiss first, so that it stays in reach however long the message; the message wraps
        // to the panel's width, in the theme's error colour (readable on light and dark).
        let color = ui.visuals().error_fg_color;
        egui::Frame::group(ui.style())
            .stroke(egui::Stroke::new(1.0, color))
            .show(ui, |ui| {
                ui.horizontal_top(|ui| {
                    if ui.small_button("Dismiss").clicked() {
                        cmds.push(Command::DismissError);
                    }
                    ui.add(
                        egui::Label::new(RichText::new(format!("Error: {e}")).color(color)).wrap(),
                    );
                });
            });
        ui.separator();
    }
}

/// Shown when the results came from another model than the loaded one, with ways out.
#[derive(Debug, Default)]
pub struct ReadOnlyBanner;

impl ReadOnlyBanner {
    /// Draws it (nothing unless read-only).
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &Document, cmds: &mut Commands) {
        if !ctx.read_only {
            return;
        }
        let from = doc
            .results_model
            .as_ref()
            .map(|m| format!("{} ({})", m.fingerprint.file_name, m.path.display()))
            .unwrap_or_default();
        let loaded = ctx
            .model
            .map(|m| format!("the loaded model is {}", m.fingerprint.file_name))
            .unwrap_or_else(|| "no model is loaded".into());
        egui::Frame::group(ui.style())
            .fill(ui.visuals().faint_bg_color)
            .show(ui, |ui| {
                ui.label(
                    RichText::new(format!(
                        "Read-only: these results came from {from}; {loaded}."
                    ))
                    .color(WARN),
                );
                ui.horizontal(|ui| {
                    if ui.button("Locate model…").clicked() {
                        cmds.push(Command::PickModel);
                    }
                    if let Some(m) = &doc.results_model
                        && m.path.is_file()
                        && ui
                            .button(format!("Load {}", m.fingerprint.file_name))
                            .clicked()
                    {
                        cmds.push(Command::LoadModel(m.path.clone()));
                    }
                    if ctx.model.is_some() && ui.button("Re-run on the loaded model").clicked() {
                        cmds.push(Command::Run);
                    }
                });
            });
        ui.separator();
    }
}

/// Asks what to do with unsaved changes when the window is closed.
#[derive(Debug, Default)]
pub struct CloseDialog {
    /// The dialog is showing (the app opens it when a close is asked for with unsaved changes).
    pub open: bool,
}

impl CloseDialog {
    /// Draws it while open.
    pub fn ui(&mut self, ui: &mut Ui, doc: &Document, cmds: &mut Commands) {
        if !self.open {
            return;
        }
        egui::Modal::new(egui::Id::unique("kvlab-close-dialog")).show(ui.ctx(), |ui| {
            ui.heading("Save changes?");
            ui.label(format!(
                "\"{}\" has changes that are not saved.",
                doc.spec.name
            ));
            ui.horizontal(|ui| {
                if ui.button("Save").clicked() {
                    // The window closes once the file is written; a failed save keeps it open.
                    cmds.push(Command::SaveAndClose);
                    self.open = false;
                }
                if ui.button("Discard").clicked() {
                    cmds.push(Command::CloseNow);
                    self.open = false;
                }
                if ui.button("Cancel").clicked() {
                    self.open = false;
                }
            });
        });
    }
}

/// Says so above results measured on an earlier version of the experiment (they stay readable,
/// greyed, until the next run replaces them).
pub fn stale_banner(ui: &mut Ui, doc: &Document) {
    if !doc.results_are_current() {
        ui.label(RichText::new(STALE_TEXT).color(WARN));
    }
}

/// What stale results say.
pub const STALE_TEXT: &str = "From an earlier version of the experiment — Run to refresh. The experiment changed since \
     these results were measured.";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sweep_progress_counts_items_and_estimates_the_rest() {
        assert_eq!(sweep_progress(0, 17, Duration::from_secs(3)), "0/17 items");
        assert_eq!(
            sweep_progress(4, 17, Duration::from_secs(8)),
            "4/17 items, about 26s left"
        );
        assert_eq!(
            sweep_progress(10, 400, Duration::from_secs(60)),
            "10/400 items, about 39 min left"
        );
        assert_eq!(
            sweep_progress(17, 17, Duration::from_secs(30)),
            "17/17 items"
        );
    }
}
