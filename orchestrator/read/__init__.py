"""Stage 1, read: every input format (FASTA, FASTQ, SAM/BAM/CRAM, GenBank; any compression) as
one stream of `Record`s, plus the scan that refuses bad input before any model call."""
