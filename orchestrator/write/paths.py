"""Every file a predict run writes into OUTDIR, named in one place.

Stages ask `OutputPaths` for paths; they never build them. Byte formats are in `formats`.
"""

from __future__ import annotations

from pathlib import Path

PREDICTIONS_NAME = "prediction_results.txt"
HIGHEST_NAME = "prediction_results_highestscore.csv"  # tab-separated despite the name
SUMMARY_NAME = "sequence_summary.tsv"
RUN_JSON_NAME = "run.json"
CALLS_NAME = "sequence_calls.tsv"
REGIONS_NAME = "viral_regions.tsv"
REGIONS_BED_NAME = "viral_regions.bed"
BEDGRAPH_NAME = "chunk_scores.bedgraph"
REPORT_NAME = "report.html"
# the calls in the layout of Broad viral-pipelines' classify_virnucpro_contigs output
# (`<basename>.contigs_classified.tsv`), which its classify_reads_by_contig step reads
BROAD_CALLS_NAME = "contigs_classified.tsv"
# MultiQC custom content (its `*_mqc.tsv` file pattern): the run summary table and calls per class
MULTIQC_NAME = "virnucpro_mqc.tsv"
MULTIQC_CALLS_NAME = "virnucpro_calls_mqc.tsv"
STATE_DIR_NAME = ".virnucpro_state"
CHUNK_TABLE_NAME = "chunk_maxima.tsv"
EMBEDDINGS_NAME = "embeddings.h5"  # predict --save-embeddings


class OutputPaths:
    """The files a run writes into OUTDIR, plus the folder holding its checkpoints."""

    def __init__(self, outdir: str | Path, *, save_embeddings: bool = False) -> None:
        self.outdir = Path(outdir)
        self.save_embeddings = save_embeddings
        self.embeddings = self.outdir / EMBEDDINGS_NAME
        self.predictions = self.outdir / PREDICTIONS_NAME
        self.highest = self.outdir / HIGHEST_NAME
        self.summary = self.outdir / SUMMARY_NAME
        self.run_json = self.outdir / RUN_JSON_NAME
        self.calls = self.outdir / CALLS_NAME
        self.regions = self.outdir / REGIONS_NAME
        self.regions_bed = self.outdir / REGIONS_BED_NAME
        self.bedgraph = self.outdir / BEDGRAPH_NAME
        self.report = self.outdir / REPORT_NAME
        self.broad_calls = self.outdir / BROAD_CALLS_NAME
        self.multiqc = self.outdir / MULTIQC_NAME
        self.multiqc_calls = self.outdir / MULTIQC_CALLS_NAME
        self.state = self.outdir / STATE_DIR_NAME
        # per chunk in input order: ID, chunk number, maxima; kept so answers can be re-derived
        self.chunk_table = self.state / CHUNK_TABLE_NAME

    def results(self) -> tuple[Path, ...]:
        """The files that make a run complete (the answers are re-derived when missing)."""
        files = (self.predictions, self.highest, self.summary, self.run_json)
        return (*files, self.embeddings) if self.save_embeddings else files

    def extra_outputs(self) -> tuple[Path, ...]:
        """Written after the results or only on request; removed with them by --restart."""
        return (self.report, self.embeddings)

    def answers(self) -> tuple[Path, ...]:
        """Files derived from the results without any model (`answers.write_answers`)."""
        return (self.calls, self.regions, self.regions_bed, self.bedgraph, self.broad_calls,
                self.multiqc, self.multiqc_calls)
