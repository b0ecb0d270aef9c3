//! The frame around the experiment: menu line, status line, first-start explanation, notes,
//! the read-only banner and the close dialog.

use egui::{RichText, Ui};

use super::WARN;
use crate::ui::app::{Busy, KvlabApp};
use crate::ui::commands::Command;

/// Menu line: file actions, theme, run controls.
pub fn top_bar(app: &mut KvlabApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        ui.heading("kvlab");
        ui.separator();
        ui.menu_button("Session", |ui| {
            for c in [Command::Open, Command::Save, Command::SaveAs] {
                if c.menu_button(ui).clicked() {
                    app.queue(c);
                    ui.close();
                }
            }
            ui.separator();
            if app.prefs.recent_sessions.is_empty() {
                ui.label(RichText::new("No recent sessions").weak());
            }
            for p in app.prefs.recent_sessions.clone() {
                if ui.button(p.display().to_string()).clicked() {
                    app.queue(Command::OpenSession(p));
                    ui.close();
                }
            }
        });
        if ui.button("Open model…").clicked() {
            app.queue(Command::PickModel);
        }
        ui.menu_button("Recent models", |ui| {
            if app.prefs.recent_models.is_empty() {
                ui.label("No recent models");
            }
            for p in app.prefs.recent_models.clone() {
                if ui.button(p.display().to_string()).clicked() {
                    app.queue(Command::LoadModel(p));
                    ui.close();
                }
            }
        });
        if ui
            .button("Seed experiment")
            .on_hover_text("Replace the experiment with the seed's")
            .clicked()
        {
            app.queue(Command::ResetToSeed);
        }
        ui.separator();
        let running = matches!(app.busy, Busy::Running { .. });
        if ui
            .add_enabled(
                app.can_run(),
                egui::Button::new(RichText::new(Command::Run.label()).strong()),
            )
            .on_hover_text(Command::Run.shortcut_text(ui.ctx()))
            .clicked()
        {
            app.queue(Command::Run);
        }
        if ui
            .add_enabled(
                app.busy != Busy::Idle,
                egui::Button::new(Command::Stop.label()),
            )
            .on_hover_text(Command::Stop.shortcut_text(ui.ctx()))
            .clicked()
        {
            app.queue(Command::Stop);
        }
        if running {
            ui.spinner();
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let label = if app.prefs.dark_mode {
                "Light theme"
            } else {
                "Dark theme"
            };
            if ui.button(label).clicked() {
                app.prefs.dark_mode = !app.prefs.dark_mode;
                ui.ctx().set_theme(if app.prefs.dark_mode {
                    egui::Theme::Dark
                } else {
                    egui::Theme::Light
                });
            }
        });
    });
}

/// Status line: what runs, how fast, progress.
pub fn status_bar(app: &mut KvlabApp, ui: &mut Ui) {
    ui.horizontal(|ui| {
        match &app.busy {
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
                if let Some(t0) = app.live.started {
                    let s = t0.elapsed().as_secs_f32().max(1e-3);
                    ui.label(format!("{:.1} tokens/s", app.live.tokens as f32 / s));
                }
            }
        }
        if !app.tasks.visible().is_empty() {
            ui.spinner();
        }
        ui.label(&app.status);
    });
}

/// Free-text notes saved with the session.
pub fn notes(app: &mut KvlabApp, ui: &mut Ui) {
    ui.heading("Notes");
    let label = ui.label(RichText::new("Saved with the session and shown in reports.").weak());
    ui.add(
        egui::TextEdit::multiline(&mut app.doc.notes)
            .desired_rows(3)
            .desired_width(f32::INFINITY),
    )
    .labelled_by(label.id);
}

/// What a newcomer needs to read the first screen: what the seed experiment does, what to look
/// at, and why the demo model does not show the seed's effect. Shown until dismissed.
pub fn welcome(app: &mut KvlabApp, ui: &mut Ui) {
    if app.prefs.welcome_dismissed {
        return;
    }
    egui::Frame::group(ui.style())
        .fill(ui.visuals().faint_bg_color)
        .show(ui, |ui| {
            ui.label(RichText::new("Welcome to kvlab: the seed experiment").strong());
            ui.label(WELCOME_TEXT);
            if ui.button("Got it").clicked() {
                app.prefs.welcome_dismissed = true;
            }
        });
    ui.separator();
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

/// Shown when the results came from another model than the loaded one.
pub fn read_only_banner(app: &mut KvlabApp, ui: &mut Ui) {
    if !app.is_read_only() {
        return;
    }
    let from = app
        .doc
        .results_model
        .as_ref()
        .map(|m| format!("{} ({})", m.fingerprint.file_name, m.path.display()))
        .unwrap_or_default();
    let loaded = app
        .model
        .as_ref()
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
                    app.queue(Command::PickModel);
                }
                if let Some(m) = app.doc.results_model.clone()
                    && m.path.is_file()
                    && ui
                        .button(format!("Load {}", m.fingerprint.file_name))
                        .clicked()
                {
                    app.queue(Command::LoadModel(m.path));
                }
                if app.model.is_some() && ui.button("Re-run on the loaded model").clicked() {
                    app.queue(Command::Run);
                }
            });
        });
    ui.separator();
}

/// Asks what to do with unsaved changes when the window is closed.
pub fn close_dialog(app: &mut KvlabApp, ui: &mut Ui) {
    if !app.confirm_close {
        return;
    }
    egui::Modal::new(egui::Id::unique("kvlab-close-dialog")).show(ui.ctx(), |ui| {
        ui.heading("Save changes?");
        ui.label(format!(
            "\"{}\" has changes that are not saved.",
            app.doc.spec.name
        ));
        ui.horizontal(|ui| {
            if ui.button("Save").clicked() {
                // The window closes once the file is written; a failed save keeps it open.
                app.queue(Command::Save);
                app.close_after_save = true;
                app.confirm_close = false;
            }
            if ui.button("Discard").clicked() {
                app.queue(Command::CloseNow);
            }
            if ui.button("Cancel").clicked() {
                app.confirm_close = false;
            }
        });
    });
}
