version 1.0

# Drop-in for the widely used `classify_virnucpro` task: the same input names and the same
# outputs. With `triton_url` the models stay resident on a Triton service, so this task runs the
# orchestrator client on a small CPU machine. Without it (Terra/Cromwell, any batch system with
# GPU VMs and no standing service) the task runs in the server image and starts a private
# tritonserver for this sample alone (`predict --start-server`), on the GPU the runtime section
# asks for: then the original's GPU inputs mean what they meant. Default outputs are
# byte-identical to the original tool's. One sample over many VMs: virnucpro_sharded.wdl.

task classify_virnucpro {
  meta {
    description: "VirNucPro viral classification of reads against a Triton service holding DNABERT-S and ESM-2 (orchestrator predict). Needs no GPU itself."
  }

  input {
    File      reads_input
    Int       expected_length = 300

    # Triton gRPC endpoint(s): "host:8001", "a:8001,b:8001" or "dns:///triton-headless:8001".
    # Not given: a private server from `model_repository` in `server_docker` (GPU runtime below).
    String?   triton_url
    String    model_repository = "/models"
    String    server_docker = "virnucpro-triton-baked:0.1.0"
    File?     classifier
    File?     ssl_root_cert
    Int       retry_deadline_seconds = 600
    # Also keep every kept frame's DNABERT-S + ESM-2 vectors (HDF5, ~13 KB per frame) to
    # re-classify, train or evaluate later without a GPU (orchestrator train/evaluate).
    Boolean   save_embeddings = false

    # Accepted so existing callers keep working. batch_size caps the rows per request (the servers'
    # max_batch_size caps it too). Without triton_url, use_gpu, gpu_type, gpu_count and
    # accelerator_* go into the runtime section as in the original; with it they have no effect
    # (the GPUs are the Triton service's). The others have no effect: the models' batching is the
    # server's configuration, and each task run starts a fresh folder.
    Boolean   parallel = false  # !UnusedDeclaration
    Boolean   persist_model = false  # !UnusedDeclaration
    Boolean   use_gpu = true
    Int       batch_size = 256
    Int?      esm_batch_size  # !UnusedDeclaration
    Int?      dnabert_batch_size  # !UnusedDeclaration
    Boolean   resume = false  # !UnusedDeclaration
    String?   accelerator_type
    Int?      accelerator_count
    String?   gpu_type
    Int?      gpu_count
    String?   vm_size  # !UnusedDeclaration

    String    docker = "virnucpro-client:0.1.0"
  }

  parameter_meta {
    reads_input: {
      description: "Sequences to classify: unaligned or aligned BAM (as the viral pipelines hand reads over), CRAM, SAM, FASTQ or FASTA; FASTA/FASTQ plain or gzip/bzip2/xz/zstd-compressed (sniffed from the bytes).",
      patterns: ["*.bam", "*.cram", "*.sam", "*.fastq", "*.fq", "*.fastq.gz", "*.fq.gz", "*.fasta", "*.fa", "*.fasta.gz", "*.fa.gz"]
    }
    expected_length: {
      description: "Chunk length in bp: 300 or 500, matching the classifier (the image's /artifacts/classifiers/<N>_model.pth unless `classifier` is given)."
    }
    triton_url: {
      description: "Triton gRPC endpoint(s) serving dnabert_s and esm2, comma-separated."
    }
  }

  String basename = sub(basename(reads_input), "\\.(bam|cram|sam|fastq\\.gz|fq\\.gz|fastq|fq|fasta\\.gz|fa\\.gz|fasta|fa)$", "")
  String classifier_path = select_first([classifier, "/artifacts/classifiers/~{expected_length}_model.pth"])
  Boolean own_server = !defined(triton_url)
  Boolean want_gpu = own_server && use_gpu
  String serving = if own_server then "--start-server --model-repository '" + model_repository + "'" else "--server '" + select_first([triton_url, ""]) + "'"

  command <<<
    set -euo pipefail
    export VIRNUCPRO_RETRY_DEADLINE=~{retry_deadline_seconds}

    orchestrator predict "~{reads_input}" -o out \
      --chunk-size ~{expected_length} \
      --classifier "~{classifier_path}" \
      ~{serving} \
      --sample "~{basename}" \
      --batch-size ~{batch_size} \
      ~{if defined(ssl_root_cert) then "--ssl-root-cert '" + ssl_root_cert + "'" else ""} \
      ~{if save_embeddings then "--save-embeddings" else ""} \
      --no-progress

    cp out/prediction_results.txt "~{basename}.virnucpro.tsv"
    cp out/prediction_results_highestscore.csv "~{basename}.virnucpro_highestscore.csv"
    tar -czf "~{basename}.virnucpro.tgz" \
      "~{basename}.virnucpro.tsv" \
      "~{basename}.virnucpro_highestscore.csv"
  >>>

  output {
    File virnuc_pro_scores = "~{basename}.virnucpro.tgz"
    File prediction_results = "~{basename}.virnucpro.tsv"
    File highestscore = "~{basename}.virnucpro_highestscore.csv"
    File run_json = "out/run.json"
    File sequence_calls = "out/sequence_calls.tsv"
    File viral_regions = "out/viral_regions.tsv"
    File viral_regions_bed = "out/viral_regions.bed"
    File chunk_scores_bedgraph = "out/chunk_scores.bedgraph"
    File report = "out/report.html"
    # the calls in the layout of classify_virnucpro_contigs: classify_reads_by_contig reads it
    File contigs_classified = "out/contigs_classified.tsv"
    # MultiQC custom content (multiqc over these files: one row per sample)
    File multiqc_summary = "out/virnucpro_mqc.tsv"
    File multiqc_calls = "out/virnucpro_calls_mqc.tsv"
    # empty unless save_embeddings (glob: engines treat a missing File? output differently)
    Array[File] embeddings = glob("out/embeddings.h5")
  }

  runtime {
    docker: if own_server then server_docker else docker
    memory: if own_server then "32 GB" else "4 GB"
    cpu: if own_server then 8 else 2
    gpu: want_gpu
    gpuType: select_first([gpu_type, "nvidia-tesla-t4"])
    gpuCount: if want_gpu then select_first([gpu_count, 1]) else 0
    acceleratorType: select_first([accelerator_type, "nvidia-tesla-t4"])  # !UnknownRuntimeKey
    acceleratorCount: if want_gpu then select_first([accelerator_count, 1]) else 0  # !UnknownRuntimeKey
    disks: "local-disk 50 SSD"
    disk: "50 GB"
    maxRetries: 1
  }
}
