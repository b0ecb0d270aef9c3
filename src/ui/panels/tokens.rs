//! The token strip: the tokenized prompts, one row of chips per variant, where a click (or a
//! shift-click, to extend) chooses the needle.
//!
//! The spec stores a chosen needle as token positions. Positions mean nothing once the prompt is
//! tokenized anew (another prompt mode wraps it in a chat template; an edited turn shifts it), so
//! the strip remembers what text the chosen tokens spelled and, when new tokens come, finds that
//! text again and moves the needle there; when the text is not found unambiguously, the needle
//! goes back to Auto and the strip says so (it used to stay at the old positions, now pointing at
//! other tokens).

use egui::{RichText, Ui, Vec2};

use super::{BAD, ViewCtx, WARN, hint};
use crate::experiment::{ExperimentSpec, Span};
use crate::runner::Prepared;
use crate::ui::commands::{Command, Commands};
use crate::ui::document::Document;

/// The tokenized prompts and the needle.
#[derive(Debug, Default)]
pub struct TokenStrip {
    /// The needle the spec holds, as chosen (or last seen) in the current tokenization.
    chosen: Option<Chosen>,
    /// A chosen needle whose prompt changed, waiting for the new tokens to be found in.
    following: Option<Chosen>,
    /// Why a chosen needle went back to Auto, until the next choice.
    notice: Option<String>,
    /// The needle the strip last scrolled to (it scrolls again when the needle moves).
    shown: Option<Span>,
    /// Frames left to bring the needle into view (counted down while it is not yet visible, so
    /// that a needle wider than the strip does not pin the scroll there).
    scroll_frames: u8,
}

/// A chosen needle as its text: what the tokens at its positions spelled, in which prompt.
#[derive(Debug, Clone, PartialEq)]
struct Chosen {
    /// The prompt it was chosen in (mode, turns, variants).
    prompt: String,
    /// The first variant's token ids then.
    ids: Vec<i32>,
    /// Its positions.
    span: Span,
    /// The text of the tokens at those positions.
    text: String,
    /// Which occurrence of `text` in that prompt it was (0: the first).
    nth: usize,
    /// How often `text` occurs in that prompt.
    count: usize,
}

impl TokenStrip {
    /// Draws it.
    pub fn ui(&mut self, ui: &mut Ui, ctx: &ViewCtx, doc: &mut Document, cmds: &mut Commands) {
        self.follow(ctx, &mut doc.spec);
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
                    (self.chosen, self.following, self.notice) = (None, None, None);
                }
            }
        });
        if let Some(n) = &self.notice {
            ui.label(RichText::new(n).color(WARN));
        }
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
        if self.shown != Some(prepared.span) {
            self.shown = Some(prepared.span);
            self.scroll_frames = 5;
        }
        let scroll = self.scroll_frames > 0;
        let (clicked, needle_in_view) = chips(ui, prepared, scroll);
        if scroll && !ui.is_sizing_pass() {
            self.scroll_frames = if needle_in_view {
                0
            } else {
                self.scroll_frames - 1
            };
        }
        if let Some(pos) = clicked {
            let cached = prepared.prompts[0].tokens.len().saturating_sub(1);
            if pos >= cached {
                cmds.push(Command::ShowError(format!(
                    "position {pos} is the last prompt token: it is fed after the edit, so it cannot be the needle"
                )));
            } else {
                let span = clicked_span(pos, shift, doc.spec.needle_span.unwrap_or(prepared.span));
                doc.spec.needle_span = Some(span);
                self.chosen = Chosen::at(prompt_key(&doc.spec), prepared, span);
                (self.following, self.notice) = (None, None);
            }
        }
    }

    /// Keeps a chosen needle on its text across re-tokenization (see the module's docs): notices
    /// that the prompt changed under it, waits for the new tokens (letting go of positions the
    /// new prompt is too short for, so that it can be tokenized at all), then finds the text.
    fn follow(&mut self, ctx: &ViewCtx, spec: &mut ExperimentSpec) {
        let key = prompt_key(spec);
        if let Some(c) = self.chosen.take_if(|c| c.prompt != key)
            && spec.needle_span == Some(c.span)
        {
            self.following = Some(c);
        }
        if let Some(f) = &self.following {
            let user_chose = spec.needle_span.is_some_and(|s| s != f.span);
            match ctx.prepared {
                _ if user_chose => self.following = None,
                Some(p) if first_ids(p) != f.ids => {
                    match find_again(f, p) {
                        Some(span) => {
                            spec.needle_span = Some(span);
                            self.chosen = Chosen::at(key, p, span);
                            self.notice = None;
                        }
                        None => {
                            spec.needle_span = None;
                            self.notice = Some(format!(
                                "The chosen needle {:?} is not in the new tokens exactly where it \
                                 was in the old ones, so the needle is found automatically again \
                                 (where the variants differ).",
                                f.text
                            ));
                        }
                    }
                    self.following = None;
                }
                // The old span does not fit the new prompt: tokenize without it, then find.
                None if ctx.prepare_error.is_some() => spec.needle_span = None,
                _ => {}
            }
        } else if self.chosen.is_none()
            && let (Some(span), Some(p)) = (spec.needle_span, ctx.prepared)
            && p.span == span
        {
            // A needle from an opened session or the autosave: remember its text as it is now.
            self.chosen = Chosen::at(key, p, span);
        }
    }
}

impl Chosen {
    /// The needle at `span` in `prepared`'s first prompt.
    fn at(prompt: String, prepared: &Prepared, span: Span) -> Option<Chosen> {
        let pieces = pieces(prepared);
        let text = pieces.get(span.start..span.end)?.concat();
        let before = pieces[..span.start].concat();
        let nth = occurrences(&format!("{before}{text}"), &text)
            .len()
            .checked_sub(1)?;
        let count = occurrences(&pieces.concat(), &text).len();
        Some(Chosen {
            prompt,
            ids: first_ids(prepared),
            span,
            text,
            nth,
            count,
        })
    }
}

/// What re-tokenizes the prompt: its mode, turns and variants (not the needle).
fn prompt_key(spec: &ExperimentSpec) -> String {
    serde_json::to_string(&(&spec.prompt, &spec.variants)).unwrap_or_default()
}

/// The first variant's token ids.
fn first_ids(p: &Prepared) -> Vec<i32> {
    p.prompts
        .first()
        .map(|q| q.tokens.iter().map(|t| t.id).collect())
        .unwrap_or_default()
}

/// The first variant's token texts.
fn pieces(p: &Prepared) -> Vec<&str> {
    p.prompts
        .first()
        .map(|q| q.tokens.iter().map(|t| t.piece.as_str()).collect())
        .unwrap_or_default()
}

/// Where `needle` starts in `text` (byte offsets; overlapping matches count).
fn occurrences(text: &str, needle: &str) -> Vec<usize> {
    if needle.is_empty() {
        return Vec::new();
    }
    (0..text.len())
        .filter(|&i| text.is_char_boundary(i) && text[i..].starts_with(needle))
        .collect()
}

/// The chosen text in the new tokens: the same occurrence of it (the new prompt must hold it as
/// often as the old one did), starting and ending on token boundaries (it may be spelled by more
/// or fewer tokens than before), and not the last token (which is fed after the edit). `None`:
/// not found unambiguously.
fn find_again(chosen: &Chosen, prepared: &Prepared) -> Option<Span> {
    let pieces = pieces(prepared);
    let mut starts = Vec::with_capacity(pieces.len() + 1);
    let mut at = 0;
    for p in &pieces {
        starts.push(at);
        at += p.len();
    }
    starts.push(at);
    let all = pieces.concat();
    let found = occurrences(&all, &chosen.text);
    if found.len() != chosen.count {
        return None;
    }
    let begin = found[chosen.nth];
    let start = starts.iter().position(|&s| s == begin)?;
    let end = starts
        .iter()
        .position(|&s| s == begin + chosen.text.len())?;
    (end < pieces.len()).then_some(Span { start, end })
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
/// selected), in a strip with a visible scroll bar when it is wider than the panel, scrolled to
/// the needle when `scroll`; returns the position clicked and whether the needle is in view.
fn chips(ui: &mut Ui, prepared: &Prepared, scroll: bool) -> (Option<usize>, bool) {
    let mut clicked = None;
    let mut in_view = false;
    // Darker on light backgrounds, where the dark theme's amber is hard to read.
    let differ_color = if ui.visuals().dark_mode {
        WARN
    } else {
        egui::Color32::from_rgb(150, 90, 0)
    };
    // A solid bar rather than egui's floating one, which shows only under the pointer: a
    // long prompt must look scrollable.
    ui.scope(|ui| {
        ui.spacing_mut().scroll = egui::style::ScrollStyle::solid();
        egui::ScrollArea::horizontal()
            .id_salt("token-strip")
            .scroll_bar_visibility(egui::scroll_area::ScrollBarVisibility::VisibleWhenNeeded)
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
                                let mut text =
                                    RichText::new(t.piece.replace('\n', "¶")).monospace();
                                if differs {
                                    text = text.color(differ_color).strong();
                                }
                                let r = ui
                                    .selectable_label(in_span, text)
                                    .on_hover_text(format!("position {pos} · token id {}", t.id));
                                if r.clicked() {
                                    clicked = Some(pos);
                                }
                                if pos == prepared.span.start
                                    && std::ptr::eq(p, &prepared.prompts[0])
                                {
                                    in_view = ui.clip_rect().contains_rect(r.rect);
                                    // Not while egui lays the grid out unseen: the chip is
                                    // not where it will be drawn then.
                                    if scroll && !in_view && !ui.is_sizing_pass() {
                                        // At once: an animated scroll is not in view yet next
                                        // frame, and asking again would overshoot.
                                        r.scroll_to_me_animation(
                                            None,
                                            egui::style::ScrollAnimation::none(),
                                        );
                                    }
                                }
                            }
                            ui.end_row();
                        }
                    });
            });
    });
    (clicked, in_view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TokenPiece;
    use crate::runner::PreparedPrompt;

    fn prepared(pieces: &[&str], span: Span) -> Prepared {
        let tokens = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| TokenPiece {
                id: i as i32 + if pieces.len() > 8 { 100 } else { 0 },
                piece: p.to_string(),
            })
            .collect();
        Prepared {
            prompts: vec![PreparedPrompt {
                name: "SF".into(),
                text: pieces.concat(),
                tokens,
            }],
            span,
            warnings: vec![],
        }
    }

    const PLAIN: [&str; 7] = ["I", " am", " flying", " to", " SF", " city", "."];

    #[test]
    fn a_needle_is_found_again_by_its_text() {
        let span = Span { start: 5, end: 6 };
        let chosen = Chosen::at("plain".into(), &prepared(&PLAIN, span), span).unwrap();
        assert_eq!(
            (chosen.text.as_str(), chosen.nth, chosen.count),
            (" city", 0, 1)
        );
        let chat = [
            "<s>", "user", "\n", "I", " am", " flying", " to", " SF", " city", ".", "</s>",
        ];
        let new = prepared(&chat, Span { start: 0, end: 1 });
        assert_eq!(find_again(&chosen, &new), Some(Span { start: 8, end: 9 }));
    }

    #[test]
    fn an_ambiguous_or_merged_needle_is_not_found() {
        let span = Span { start: 5, end: 6 };
        let chosen = Chosen::at("plain".into(), &prepared(&PLAIN, span), span).unwrap();
        let twice = ["A", " city", " to", " SF", " city", ".", "x", "y", "z"];
        assert_eq!(find_again(&chosen, &prepared(&twice, span)), None);
        // Spelled by two tokens now: both are the needle.
        let split = ["I", " am", " to", " SF", " ci", "ty", ".", "x", "y"];
        let found = find_again(&chosen, &prepared(&split, span));
        assert_eq!(found, Some(Span { start: 4, end: 6 }));
        // Inside a longer token: no token boundary ends it.
        let merged = ["I", " am", " to", " SF", " cityscape", ".", "x", "y", "z"];
        assert_eq!(find_again(&chosen, &prepared(&merged, span)), None);
        // The last token is fed after the edit: it cannot be the needle.
        let last = ["I", " am", " flying", " to", " SF", "x", "y", "z", " city"];
        assert_eq!(find_again(&chosen, &prepared(&last, span)), None);
    }

    #[test]
    fn the_second_of_two_occurrences_stays_the_second() {
        let old = ["A", " city", " and", " a", " city", "."];
        let span = Span { start: 4, end: 5 };
        let chosen = Chosen::at("p".into(), &prepared(&old, span), span).unwrap();
        assert_eq!((chosen.nth, chosen.count), (1, 2));
        let new = ["<s>", "A", " city", " and", " a", " city", ".", "x", "</s>"];
        let found = find_again(&chosen, &prepared(&new, span));
        assert_eq!(found, Some(Span { start: 5, end: 6 }));
    }
}
