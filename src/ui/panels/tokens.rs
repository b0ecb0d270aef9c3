//! The token strip: the tokenized prompts, one row of chips per variant, where a click (or a
//! shift-click, to extend) chooses the needle.

use egui::{RichText, Ui, Vec2};

use super::{BAD, ViewCtx, WARN, hint};
use crate::experiment::Span;
use crate::runner::Prepared;
use crate::ui::commands::{Command, Commands};
use crate::ui::document::Document;

/// The tokenized prompts and the needle.
#[derive(Debug, Default)]
pub struct TokenStrip;

impl TokenStrip {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &mut Document, cmds: &mut Commands) {
        ui.horizontal(|ui| {
            ui.heading("Tokens");
            if let Some(p) = ctx.prepared {
                let how = if doc.spec.needle_span.is_some() {
                    "chosen"
                } else {
                    "found where the variants differ"
                };
                ui.label(format!("needle: {} ({how})", p.span));
                if doc.spec.needle_span.is_some()
                    && ui
                        .button("Auto")
                        .on_hover_text("Use the positions where the variants differ")
                        .clicked()
                {
                    doc.spec.needle_span = None;
                }
            }
        });
        if let Some(e) = ctx.prepare_error {
            ui.label(RichText::new(e).color(BAD));
        }
        let Some(prepared) = ctx.prepared else {
            if ctx.model.is_none() {
                hint(ui, "Load a model to see the prompt's tokens.");
            }
            return;
        };
        for w in &prepared.warnings {
            ui.label(RichText::new(format!("Note: {w}")).color(WARN));
        }
        let shift = ui.input(|i| i.modifiers.shift);
        if let Some(pos) = chips(ui, prepared) {
            let cached = prepared.prompts[0].tokens.len().saturating_sub(1);
            if pos >= cached {
                cmds.push(Command::ShowError(format!(
                    "position {pos} is the last prompt token: it is fed after the edit, so it cannot be the needle"
                )));
            } else {
                doc.spec.needle_span = Some(clicked_span(
                    pos,
                    shift,
                    doc.spec.needle_span.unwrap_or(prepared.span),
                ));
            }
        }
    }
}

/// The needle after a click at `pos`: that token alone, or with shift, `current` extended to it.
fn clicked_span(pos: usize, shift: bool, current: Span) -> Span {
    if shift {
        Span {
            start: current.start.min(pos),
            end: current.end.max(pos + 1),
        }
    } else {
        Span {
            start: pos,
            end: pos + 1,
        }
    }
}

/// The chips, one row per variant (tokens that differ between variants highlighted, the needle
/// selected); returns the position clicked.
fn chips(ui: &mut Ui, prepared: &Prepared) -> Option<usize> {
    let mut clicked = None;
    egui::ScrollArea::horizontal()
        .id_salt("token-strip")
        .show(ui, |ui| {
            egui::Grid::new("tokens")
                .spacing(Vec2::new(2.0, 4.0))
                .show(ui, |ui| {
                    for p in &prepared.prompts {
                        ui.label(RichText::new(&p.name).strong());
                        for (pos, t) in p.tokens.iter().enumerate() {
                            let differs = prepared
                                .prompts
                                .iter()
                                .any(|q| q.tokens.get(pos).map(|x| x.id) != Some(t.id));
                            let in_span = prepared.span.positions().contains(&pos);
                            let mut text = RichText::new(t.piece.replace('\n', "¶")).monospace();
                            if differs {
                                text = text.color(WARN).strong();
                            }
                            let r = ui
                                .selectable_label(in_span, text)
                                .on_hover_text(format!("position {pos} · token id {}", t.id));
                            if r.clicked() {
                                clicked = Some(pos);
                            }
                        }
                        ui.end_row();
                    }
                });
        });
    clicked
}
