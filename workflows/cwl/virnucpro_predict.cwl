#!/usr/bin/env cwl-runner
# VirNucPro on Triton: `orchestrator predict` as a CWL CommandLineTool (cwltool, Toil, Arvados).
#
#   cwltool --validate workflows/cwl/virnucpro_predict.cwl
#   cwltool workflows/cwl/virnucpro_predict.cwl job.yml
#
# The encoders run on Triton servers named by `servers`, so the step itself needs no GPU; the
# container is the client image built from deploy/docker/client.Dockerfile. Without servers, set
# `start_server` and `model_repository`: the step starts a private tritonserver for this run
# (run it in the server image, on a GPU node). `shard: K/N` does one part of the sample;
# virnucpro_merge.cwl joins the parts (virnucpro_sharded.cwl does both). All of the run's
# files come back: each on its own, and the whole output folder (with its checkpoint) as `outdir`.
cwlVersion: v1.2
class: CommandLineTool
id: virnucpro_predict
label: VirNucPro viral-sequence prediction through Triton servers
doc: |
  Reads FASTA/FASTQ/SAM/BAM/CRAM (plain or compressed), chunks and six-frame translates them,
  embeds the frames with DNABERT-S and ESM-2 on the Triton servers, classifies and writes the
  original VirNucPro files plus per-sequence calls, viral regions, tracks, Broad's contig table,
  MultiQC custom content, report.html and run.json.

requirements:
  NetworkAccess:
    networkAccess: true
# A hint, not a requirement: cwltool, Toil and Arvados run it in this image by default, and
# `cwltool --no-container` (orchestrator installed on the node) stays possible, which a
# requirement forbids.
hints:
  DockerRequirement:
    dockerPull: virnucpro-client:0.1.0
  ResourceRequirement:
    coresMin: 2
    ramMin: 4000

baseCommand: [orchestrator, predict]
arguments:
  - {prefix: -o, valueFrom: out}
  - --no-progress

inputs:
  reads:
    type: File[]
    doc: FASTA, FASTQ, SAM, BAM or CRAM files of one sample (formats and compression sniffed)
    inputBinding: {position: 1}
  classifier:
    type: File
    doc: 300_model.pth / 500_model.pth, or a .safetensors from `orchestrator train`
    inputBinding: {prefix: --classifier}
  chunk_size:
    type: int
    doc: chunk length, 300 or 500 for the published classifiers
    inputBinding: {prefix: --chunk-size}
  servers:
    type: string[]?
    doc: Triton gRPC endpoints HOST:PORT (or dns:///NAME:PORT); default localhost:8001
    inputBinding: {prefix: --server, itemSeparator: ","}
  start_server:
    type: boolean?
    doc: start a private tritonserver for this run from model_repository (no servers needed)
    inputBinding: {prefix: --start-server}
  model_repository:
    type: Directory?
    doc: the model repository a private server (start_server) loads
    inputBinding: {prefix: --model-repository}
  shard:
    type: string?
    doc: 'K/N: do only part K of N of the records; virnucpro_merge.cwl joins the N outdirs'
    inputBinding: {prefix: --shard}
  sample:
    type: string?
    doc: sample name in the MultiQC files (default the first input's base name)
    inputBinding: {prefix: --sample}
  priority:
    type:
      - "null"
      - type: enum
        symbols: [high, normal, low]
    doc: Triton request priority on shared servers
    inputBinding: {prefix: --priority}
  ssl:
    type: boolean?
    doc: connect with TLS using the system's roots
    inputBinding: {prefix: --ssl}
  ssl_root_cert:
    type: File?
    doc: CA certificate(s) that signed the servers' certificates (implies TLS)
    inputBinding: {prefix: --ssl-root-cert}
  ssl_cert:
    type: File?
    doc: client certificate, for servers that require mutual TLS
    inputBinding: {prefix: --ssl-cert}
  ssl_key:
    type: File?
    doc: private key of ssl_cert
    inputBinding: {prefix: --ssl-key}
  headers:
    type:
      - "null"
      - type: array
        items: string
        inputBinding: {prefix: --header}
    doc: gRPC metadata KEY=VALUE sent on every call, e.g. authorization=Bearer TOKEN
  batch_size:
    type: int?
    inputBinding: {prefix: --batch-size}
  max_in_flight:
    type: int?
    inputBinding: {prefix: --max-in-flight}
  window:
    type: int?
    inputBinding: {prefix: --window}
  min_weighted_delta:
    type: float?
    doc: 'weighted mean delta above which a sequence is viral (default 0.3)'
    inputBinding: {prefix: --min-weighted-delta}
  high_confidence_delta:
    type: float?
    doc: '|weighted delta| above which a call is high confidence (default 0.6)'
    inputBinding: {prefix: --high-confidence-delta}
  min_confident_score:
    type: float?
    doc: 'a chunk is confident when its own max score exceeds this (default 0.8)'
    inputBinding: {prefix: --min-confident-score}
  max_opposing_score:
    type: float?
    doc: '... and the opposing max score is below this (default 0.3)'
    inputBinding: {prefix: --max-opposing-score}
  min_ambiguous_score:
    type: float?
    doc: 'a chunk is ambiguous when both max scores exceed this (default 0.7)'
    inputBinding: {prefix: --min-ambiguous-score}
  min_viral_prop:
    type: float?
    doc: 'confident viral chunks / non-ambiguous chunks for high or moderate (default 0.1)'
    inputBinding: {prefix: --min-viral-prop}
  min_nonviral_prop:
    type: float?
    doc: 'the same for non-viral calls (default 0.1)'
    inputBinding: {prefix: --min-nonviral-prop}
  min_chunks:
    type: int?
    doc: 'fewer scored chunks lower the tier one step (default 5)'
    inputBinding: {prefix: --min-chunks}
  region_max_gap:
    type: int?
    doc: 'non-viral chunks bridged inside a viral region (default 1)'
    inputBinding: {prefix: --region-max-gap}
  region_min_length:
    type: int?
    doc: 'shortest viral region reported, in bp (default 1000)'
    inputBinding: {prefix: --region-min-length}
  save_embeddings:
    type: boolean?
    doc: also write embeddings.h5 (every kept frame's vectors)
    inputBinding: {prefix: --save-embeddings}
  no_report:
    type: boolean?
    doc: skip report.html
    inputBinding: {prefix: --no-report}

outputs:
  outdir:
    type: Directory
    doc: the whole output folder, checkpoint included
    outputBinding: {glob: out}
  prediction_results:
    type: File
    doc: "the original's per-frame predictions"
    outputBinding: {glob: out/prediction_results.txt}
  highestscore:
    type: File
    doc: "the original's per-chunk maxima (tab-separated)"
    outputBinding: {glob: out/prediction_results_highestscore.csv}
  sequence_summary:
    type: File
    doc: 'one row per input record'
    outputBinding: {glob: out/sequence_summary.tsv}
  sequence_calls:
    type: File
    doc: 'per-sequence calls and confidence tiers'
    outputBinding: {glob: out/sequence_calls.tsv}
  viral_regions:
    type: File
    doc: 'runs of viral chunks, 1-based inclusive'
    outputBinding: {glob: out/viral_regions.tsv}
  viral_regions_bed:
    type: File
    doc: 'the viral regions as BED'
    outputBinding: {glob: out/viral_regions.bed}
  chunk_scores:
    type: File
    doc: 'chunk virus scores as bedGraph'
    outputBinding: {glob: out/chunk_scores.bedgraph}
  contigs_classified:
    type: File
    doc: "the calls in the layout of Broad's classify_virnucpro_contigs"
    outputBinding: {glob: out/contigs_classified.tsv}
  multiqc_summary:
    type: File
    doc: "MultiQC custom content: the run's summary row"
    outputBinding: {glob: out/virnucpro_mqc.tsv}
  multiqc_calls:
    type: File
    doc: 'MultiQC custom content: calls per class'
    outputBinding: {glob: out/virnucpro_calls_mqc.tsv}
  run_json:
    type: File
    doc: 'parameters, models, counts, timings, endpoints'
    outputBinding: {glob: out/run.json}
  report:
    type: File?
    doc: 'self-contained HTML report (absent with no_report)'
    outputBinding: {glob: out/report.html}
  embeddings:
    type: File?
    doc: "every kept frame's vectors (with save_embeddings)"
    outputBinding: {glob: out/embeddings.h5}
