//! The central area as a dock: the experiment's tokens and conditions, the outcome grid, and
//! the analysis views (probe chart, score table, K/V delta, sweeps) as tabs.
//!
//! Why a dock ([`egui_tiles`], rerun's tiling crate): before it, the grid and every analysis view
//! were stacked in one long scrolling column, so reading a heatmap meant scrolling the grid away,
//! and the views that are coming (datasets, attention) would have made it longer still. Here
//! each view has its own area with its own scroll bars; the gaps between areas can be dragged
//! to resize them, and a view's tab can be dragged elsewhere (beside the grid, into its own
//! column) to compare two views at once. The layout lives for the session; which analysis tab
//! is in front is a preference, remembered between launches.

use egui::{Ui, WidgetText};
use egui_tiles::{
    Behavior, Container, SimplificationOptions, Tile, TileId, Tiles, Tree, UiResponse,
};

use super::analysis::score_table;
use super::{AnalysisPanel, ConditionsPanel, OutcomeGrid, TokenStrip, ViewCtx, stale_banner};
use crate::ui::commands::{Command, Commands};
use crate::ui::document::Document;
use crate::ui::prefs::{AnalysisTab, PrefEdit};

/// A view in the dock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    /// The token strip and the conditions: the experiment as the model sees it.
    Experiment,
    /// The outcome grid.
    Outcome,
    /// One analysis view.
    Analysis(AnalysisTab),
}

impl Pane {
    /// Its tab's title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Experiment => "Prompt and conditions",
            Pane::Outcome => "Outcome grid",
            Pane::Analysis(t) => t.title(),
        }
    }
}

/// The dock's layout (which views are where, how large) and the analysis tab last in front.
#[derive(Debug)]
pub struct Dock {
    tree: Tree<Pane>,
    /// The analysis tab last brought to the front from the preferences: the dock follows the
    /// preference when something else changes it (a finished dataset run shows its tab).
    shown_pref: Option<AnalysisTab>,
}

impl Default for Dock {
    fn default() -> Self {
        Dock {
            tree: default_tree(),
            shown_pref: None,
        }
    }
}

/// The first layout: three full-width rows, the experiment on top, the outcome grid under it
/// (the largest: two variants' texts side by side), the analysis tabs at the bottom (heatmaps
/// and charts are wide, so they get the full width too).
fn default_tree() -> Tree<Pane> {
    let mut tiles = Tiles::default();
    let experiment = tiles.insert_pane(Pane::Experiment);
    let grid = tiles.insert_pane(Pane::Outcome);
    let views = AnalysisTab::ALL
        .iter()
        .map(|t| tiles.insert_pane(Pane::Analysis(*t)))
        .collect();
    let analysis = tiles.insert_tab_tile(views);
    let root = tiles.insert_vertical_tile(vec![experiment, grid, analysis]);
    set_shares(
        &mut tiles,
        root,
        &[(experiment, 1.0), (grid, 1.3), (analysis, 1.2)],
    );
    Tree::new(egui::Id::unique("kvlab-dock"), root, tiles)
}

/// Sets the relative sizes of a linear container's children.
fn set_shares(tiles: &mut Tiles<Pane>, container: TileId, shares: &[(TileId, f32)]) {
    if let Some(Tile::Container(Container::Linear(linear))) = tiles.get_mut(container) {
        for (child, share) in shares {
            linear.shares.set_share(*child, *share);
        }
    }
}

/// The panels the dock draws, lent for one frame.
pub struct DockPanels<'p> {
    /// The token strip.
    pub tokens: &'p mut TokenStrip,
    /// The conditions.
    pub conditions: &'p mut ConditionsPanel,
    /// The outcome grid.
    pub grid: &'p mut OutcomeGrid,
    /// The analysis views.
    pub analysis: &'p mut AnalysisPanel,
}

impl Dock {
    /// Draws the dock in the rest of `ui`.
    pub fn ui(
        &mut self,
        ui: &mut Ui,
        panels: DockPanels<'_>,
        ctx: &ViewCtx,
        doc: &mut Document,
        cmds: &mut Commands,
    ) {
        if self.shown_pref != Some(ctx.prefs.tab) {
            self.shown_pref = Some(ctx.prefs.tab);
            let tab = ctx.prefs.tab;
            self.tree
                .make_active(|_, tile| matches!(tile, Tile::Pane(Pane::Analysis(t)) if *t == tab));
        }
        let mut behavior = DockBehavior {
            panels,
            ctx,
            doc,
            cmds,
            shown: Vec::new(),
            egui_ctx: ui.ctx().clone(),
        };
        self.tree.ui(&mut behavior, ui);
        // The analysis tab the user brought to the front is remembered (when the preferred one
        // is no longer shown and another is).
        let shown = std::mem::take(&mut behavior.shown);
        if !shown.contains(&ctx.prefs.tab)
            && let Some(&front) = shown.first()
        {
            behavior.cmds.push(Command::SetPref(PrefEdit::Tab(front)));
        }
    }
}

/// What a dataset experiment runs, in place of the token strip and the conditions (its prompts
/// and conditions are templates, edited in its file).
fn dataset_summary(ui: &mut Ui, d: &crate::experiment::dataset::DatasetSpec) {
    ui.heading("Dataset");
    let n_items = crate::experiment::dataset::items(d).len();
    ui.label(format!(
        "{} needles, {} prompt templates, {} items (a template with a pair of needles), {} conditions on each: {}.",
        d.needles.len(),
        d.templates.len(),
        n_items,
        d.conditions.len(),
        d.conditions
            .iter()
            .map(|c| c.row_label())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    ui.label(
        egui::RichText::new(
            "Run runs every item, batched in waves; the Dataset tab shows the flip rates and \
             preference changes with their intervals. The needle table and templates are edited \
             in the experiment's JSON file.",
        )
        .weak(),
    );
}

/// How the dock draws its panes and tabs.
struct DockBehavior<'a, 'p> {
    panels: DockPanels<'p>,
    ctx: &'a ViewCtx<'a>,
    doc: &'a mut Document,
    cmds: &'a mut Commands,
    /// The analysis views drawn this frame.
    shown: Vec<AnalysisTab>,
    /// For a repaint after an edit of the layout.
    egui_ctx: egui::Context,
}

impl Behavior<Pane> for DockBehavior<'_, '_> {
    fn tab_title_for_pane(&mut self, pane: &Pane) -> WidgetText {
        pane.title().into()
    }

    fn pane_ui(&mut self, ui: &mut Ui, _tile: TileId, pane: &mut Pane) -> UiResponse {
        let (ctx, doc, cmds) = (self.ctx, &mut *self.doc, &mut *self.cmds);
        let p = &mut self.panels;
        // Each view scrolls by itself; its content fills the area's width.
        egui::ScrollArea::both()
            .id_salt(("dock", *pane))
            .auto_shrink(false)
            .show(ui, |ui| {
                ui.add_space(4.0);
                match *pane {
                    Pane::Experiment => match &doc.spec.dataset {
                        // A dataset's prompts and conditions are templates: say what runs.
                        Some(d) => dataset_summary(ui, d),
                        None => {
                            p.tokens.ui(ui, ctx, doc, cmds);
                            ui.separator();
                            p.conditions.ui(ui, ctx, doc, cmds);
                        }
                    },
                    Pane::Outcome => p.grid.ui(ui, ctx, doc),
                    Pane::Analysis(tab) => {
                        self.shown.push(tab);
                        if !matches!(tab, AnalysisTab::Sweeps | AnalysisTab::Dataset) {
                            stale_banner(ui, doc);
                        }
                        match tab {
                            AnalysisTab::Probes => p.analysis.probe_chart(ui, ctx, doc, cmds),
                            AnalysisTab::Scores => score_table(ui, doc),
                            AnalysisTab::KvDelta => p.analysis.kv_delta(ui, ctx, doc, cmds),
                            AnalysisTab::Sweeps => p.analysis.sweeps.ui(ui, ctx, doc, cmds),
                            AnalysisTab::Dataset => p.analysis.dataset.ui(ui, doc),
                            AnalysisTab::Attention => p.analysis.attention.ui(ui, ctx, doc, cmds),
                        }
                    }
                }
            });
        UiResponse::None
    }

    fn on_edit(&mut self, _action: egui_tiles::EditAction) {
        // A chosen tab is laid out from the next frame on: draw it now, not at the next event.
        self.egui_ctx.request_repaint();
    }

    fn tab_bar_height(&self, _style: &egui::Style) -> f32 {
        26.0
    }

    fn gap_width(&self, _style: &egui::Style) -> f32 {
        // Wide enough to grab for resizing.
        6.0
    }

    fn is_tile_draggable(&self, _tiles: &Tiles<Pane>, _tile: TileId) -> bool {
        true
    }

    fn simplification_options(&self) -> SimplificationOptions {
        SimplificationOptions {
            // Every view keeps a titled tab: its name, and a handle to drag it by.
            all_panes_must_have_tabs: true,
            ..SimplificationOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_is_in_the_first_layout_once() {
        let tree = default_tree();
        let mut panes = vec![Pane::Experiment, Pane::Outcome];
        panes.extend(AnalysisTab::ALL.iter().map(|t| Pane::Analysis(*t)));
        for pane in panes {
            let n = tree
                .tiles
                .iter()
                .filter(|(_, t)| matches!(t, Tile::Pane(p) if *p == pane))
                .count();
            assert_eq!(n, 1, "{pane:?}");
        }
    }
}
