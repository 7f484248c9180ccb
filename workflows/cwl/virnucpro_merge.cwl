#!/usr/bin/env cwl-runner
# `orchestrator merge`: the outdirs of virnucpro_predict.cwl runs with shard 1/N ... N/N joined
# into the files one unsharded run writes, byte for byte (refused, exit 2, when a shard is
# missing, repeated, unfinished or of another run).
#
#   cwltool --validate workflows/cwl/virnucpro_merge.cwl
cwlVersion: v1.2
class: CommandLineTool
id: virnucpro_merge
label: join the shards of one VirNucPro sample
hints:
  DockerRequirement:
    dockerPull: virnucpro-client:0.1.0
  ResourceRequirement:
    coresMin: 1
    ramMin: 2000

baseCommand: [orchestrator, merge]
arguments:
  - {prefix: -o, valueFrom: out}
  - --no-progress

inputs:
  shards:
    type: Directory[]
    doc: the outdir of each virnucpro_predict.cwl run with shard K/N, in any order
    inputBinding: {position: 1}
  no_report:
    type: boolean?
    doc: skip report.html
    inputBinding: {prefix: --no-report}

outputs:
  outdir:
    type: Directory
    doc: the merged run's folder
    outputBinding: {glob: out}
  prediction_results:
    type: File
    outputBinding: {glob: out/prediction_results.txt}
  highestscore:
    type: File
    outputBinding: {glob: out/prediction_results_highestscore.csv}
  sequence_calls:
    type: File
    outputBinding: {glob: out/sequence_calls.tsv}
  run_json:
    type: File
    outputBinding: {glob: out/run.json}
  report:
    type: File?
    outputBinding: {glob: out/report.html}
  embeddings:
    type: File?
    outputBinding: {glob: out/embeddings.h5}
