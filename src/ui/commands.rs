//! What the user (or the app itself) asks for, queued during a frame and carried out after it.
//!
//! Panels never act on the world: they push a [`Command`]. Each command that a user can give
//! owns its label and its keyboard shortcut here, so the menu text, the hover text and the key
//! handling can never disagree (they used to be written twice).

use std::path::PathBuf;

use egui::{Key, KeyboardShortcut, Modifiers};

use super::prefs::PrefEdit;

/// Something the UI wants done; queued during the frame, run after it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Show a file dialog to pick a model.
    PickModel,
    /// Load this model file.
    LoadModel(PathBuf),
    /// Stop the current load, run or sweep.
    Stop,
    /// Run the experiment.
    Run,
    /// Re-tokenize the prompts.
    Prepare,
    /// Replace the conditions with the seed grid (none, zero, transplant, remove × variants).
    SeedGrid,
    /// Replace the experiment with the seed experiment (a new, unsaved session).
    ResetToSeed,
    /// Save to the current session file (or ask where, the first time).
    Save,
    /// Ask where to save, then save.
    SaveAs,
    /// Ask which session to open.
    Open,
    /// Open this session file.
    OpenSession(PathBuf),
    /// Write the autosave file (in the background).
    Autosave,
    /// Close the window after the user chose to save or discard.
    CloseNow,
    /// Run the sweep chosen in the sweep tab.
    RunSweep,
    /// Save, then close the window once the file is written (the close dialog's "Save").
    SaveAndClose,
    /// Change a preference.
    SetPref(PrefEdit),
    /// Show an error until dismissed.
    ShowError(String),
    /// Hide the error shown.
    DismissError,
}

impl Command {
    /// The commands that have a keyboard shortcut, in the order keys are checked (longer
    /// chords first: Ctrl+Shift+S must not also count as Ctrl+S).
    pub const WITH_SHORTCUTS: [Command; 5] = [
        Command::SaveAs,
        Command::Save,
        Command::Open,
        Command::Run,
        Command::Stop,
    ];

    /// The text of its button or menu item.
    pub fn label(&self) -> &'static str {
        match self {
            Command::PickModel => "Open model…",
            Command::LoadModel(_) => "Load",
            Command::Stop => "Stop",
            Command::Run => "Run",
            Command::Prepare => "Re-tokenize",
            Command::SeedGrid => "Seed grid",
            Command::ResetToSeed => "Seed experiment",
            Command::Save => "Save",
            Command::SaveAs => "Save as…",
            Command::Open => "Open session or experiment…",
            Command::OpenSession(_) => "Open",
            Command::Autosave => "Autosave",
            Command::CloseNow => "Close",
            Command::RunSweep => "Run sweep",
            Command::SaveAndClose => "Save",
            Command::SetPref(_) => "Set preference",
            Command::ShowError(_) => "Show error",
            Command::DismissError => "Dismiss",
        }
    }

    /// Its keyboard shortcut, if it has one.
    pub fn shortcut(&self) -> Option<KeyboardShortcut> {
        let cmd = |key| KeyboardShortcut::new(Modifiers::COMMAND, key);
        match self {
            Command::Save => Some(cmd(Key::S)),
            Command::SaveAs => Some(KeyboardShortcut::new(
                Modifiers::COMMAND | Modifiers::SHIFT,
                Key::S,
            )),
            Command::Open => Some(cmd(Key::O)),
            Command::Run => Some(cmd(Key::Enter)),
            Command::Stop => Some(KeyboardShortcut::new(Modifiers::NONE, Key::Escape)),
            _ => None,
        }
    }

    /// The shortcut as the platform writes it ("Ctrl+S", "⌘S"), or "".
    pub fn shortcut_text(&self, ctx: &egui::Context) -> String {
        self.shortcut()
            .map(|s| ctx.format_shortcut(&s))
            .unwrap_or_default()
    }

    /// A menu item for the command: its label with the shortcut beside it.
    pub fn menu_button(&self, ui: &mut egui::Ui) -> egui::Response {
        let text = self.shortcut_text(ui.ctx());
        ui.add(egui::Button::new(self.label()).shortcut_text(text))
    }
}

/// The commands queued during one frame.
#[derive(Debug, Default)]
pub struct Commands(Vec<Command>);

impl Commands {
    /// Queues a command.
    pub fn push(&mut self, c: Command) {
        self.0.push(c);
    }

    /// Takes every queued command, oldest first.
    pub fn take(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.0)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The commands whose shortcuts were pressed this frame (each consumed, so a text field does
/// not also see it).
pub fn pressed(ctx: &egui::Context) -> Vec<Command> {
    ctx.input_mut(|i| {
        Command::WITH_SHORTCUTS
            .into_iter()
            .filter(|c| c.shortcut().is_some_and(|s| i.consume_shortcut(&s)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_are_distinct_and_listed() {
        let mut seen = Vec::new();
        for c in Command::WITH_SHORTCUTS {
            let s = c.shortcut().expect("listed commands have shortcuts");
            assert!(!seen.contains(&s), "{c:?} reuses a shortcut");
            seen.push(s);
        }
        assert!(Command::RunSweep.shortcut().is_none());
    }

    #[test]
    fn ctrl_shift_s_is_save_as_only() {
        let ctx = egui::Context::default();
        let mut input = egui::RawInput::default();
        input.events.push(egui::Event::Key {
            key: Key::S,
            physical_key: None,
            pressed: true,
            repeat: false,
            modifiers: Modifiers::COMMAND | Modifiers::SHIFT,
        });
        let mut got = Vec::new();
        let mut out = ctx.run_ui(input, |ui| got = pressed(ui.ctx()));
        out.textures_delta.clear(); // no GPU to upload the font atlas to
        assert_eq!(got, vec![Command::SaveAs]);
    }
}
