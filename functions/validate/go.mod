module mp3converter/functions/validate

go 1.26
